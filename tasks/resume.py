"""Resume: each stage of a (run, arm, seed, round) runs once; a resumed run skips what completed.

    >>> rows = resumable(key, "sample-0", sample, cfg, key, model_ref, requests)
    # first time: runs sample(...) and saves its value to
    #   <home>/<run>/_checkpoints/arm=retry/seed=0/round=1/sample-0.pkl
    # after a crash and `pidistill run ... --run-id <run>`: returns the saved value, runs nothing

`fault_point` is the crash tests' hook: PIDISTILL_FAULT_KILL_AT="sample#2" makes this process
SIGKILL itself the second time it reaches the point named `sample` (points: sample, train, and
after:<stage> once a stage's checkpoint is saved). Unset in normal use: it costs one lookup.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from storage.writer import write_atomic
from tasks.keys import RoundKey

log = logging.getLogger(__name__)
T = TypeVar("T")


def checkpoint_path(key: RoundKey, name: str) -> Path:
    """Where stage `name` of `key` records that it completed, with its return value."""
    return (
        Path(key.home)
        / key.run_id
        / "_checkpoints"
        / f"arm={key.arm}"
        / f"seed={key.seed}"
        / f"round={key.round}"
        / f"{name}.pkl"
    )


def resumable(key: RoundKey, name: str, compute: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`compute(*args, **kwargs)` once per (run, arm, seed, round, stage[, level or shard]).

    The first time, `compute` runs and its return value is pickled to the stage's
    checkpoint (temp name, then `os.replace`: it exists whole or not at all). When the
    checkpoint exists (a resumed run), the stage is skipped and the value returned.

    Why this is enough for crash safety: a stage writes its parquet shards at fixed paths
    (atomically) before it returns, and its checkpoint after. A process killed anywhere
    in between leaves either no checkpoint, so the stage runs again and rewrites the same
    paths with the same rows (seeds are derived, never drawn from the clock), or a
    checkpoint, so the stage is done. Nothing is written twice; temp files of a killed
    writer are swept when the run resumes (`storage.writer.sweep_temp_files`).
    """
    path = checkpoint_path(key, name)
    if path.exists():
        with open(path, "rb") as f:
            value = pickle.load(f)
        log.info(
            "%s arm=%s seed=%d round=%d: %s already completed, skipped", key.run_id, key.arm, key.seed, key.round, name
        )
        return value
    value = compute(*args, **kwargs)
    write_atomic(path, lambda tmp: tmp.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)))
    fault_point(f"after:{name.split('-')[0]}")
    return value


_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Crash tests: SIGKILL this process at the point PIDISTILL_FAULT_KILL_AT names (see module docstring)."""
    spec = os.environ.get("PIDISTILL_FAULT_KILL_AT")
    if not spec:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    for item in spec.split(","):
        point, _, nth = item.strip().partition("#")
        if point == name and _fault_hits[name] == int(nth or 1):
            log.warning("PIDISTILL_FAULT_KILL_AT=%s: killing this process (SIGKILL) at %s", spec, name)
            os.kill(os.getpid(), signal.SIGKILL)
