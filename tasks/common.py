"""What every stage shares: the round key, the domain of a config, seeds derived per stage,
stage checkpoints (resume), and which failures Prefect retries."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from domains import Domain, Problem, get_domain
from experiments.config import DomainConfig, ExperimentConfig
from storage.writer import shard_path, write_atomic, write_rows

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RoundKey:
    """Where a stage's output belongs: one run, arm, seed and round."""

    run_id: str
    arm: str
    seed: int
    round: int
    home: str  # PIDISTILL_HOME, absolute

    def path(self, table: str, stage: str, shard: int = 0) -> Path:
        return shard_path(Path(self.home), self.run_id, table, self.arm, self.seed, self.round, stage, shard)

    def columns(self) -> dict:
        return {"run_id": self.run_id, "arm": self.arm, "seed": self.seed, "round": self.round}


@functools.lru_cache(maxsize=16)
def _domain(name: str, path: str | None, options_json: str) -> Domain:
    return get_domain(name, path=path, **json.loads(options_json))


def domain_of(cfg: DomainConfig | ExperimentConfig) -> Domain:
    """The (cached) domain object a config names."""
    d = cfg.domain if isinstance(cfg, ExperimentConfig) else cfg
    return _domain(d.name, d.path, json.dumps(d.options, sort_keys=True))


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts, e.g. derive_seed(seed, round, "sample", attempt_idx)."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def attempt_id(*parts: object) -> str:
    """Deterministic: a rerun of the same config and seed gives the same ids."""
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:20]


def eval_problems(cfg: ExperimentConfig) -> list[Problem]:
    """The held-out problems: the first `eval_size` of the test split, the same for every seed and arm."""
    return domain_of(cfg).load("test", limit=cfg.domain.eval_size)


def now() -> datetime:
    return datetime.now(timezone.utc)


@contextmanager
def metered(keys: RoundKey | list[RoundKey], stage: str, attempt_idx: int = 0, model_ref: str = "",
            shard: int | None = None) -> Iterator[dict]:  # fmt: skip
    """Time a stage and write its `stages` row (the caller fills the counters in the yielded dict).
    Each shard of a sharded stage writes its own row (`<stage>-<attempt_idx>-<shard>.parquet`)."""
    counters = {"n_items": 0, "n_prompt_tokens": 0, "n_completion_tokens": 0, "verifier_calls": 0}
    started, t0, c0 = now(), time.perf_counter(), time.process_time()
    yield counters
    spent = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    for key in keys if isinstance(keys, list) else [keys]:
        row = {**key.columns(), "stage": stage, "attempt_idx": attempt_idx, "model_ref": model_ref,
               **counters, **spent, "started_at": started, "shard": shard, "worker": worker_name()}
        write_rows(key.path("stages", f"{stage}-{attempt_idx}", shard or 0), [row], "stages")


def worker_name() -> str:
    """Who runs this code: "host:pid", or "ray:<node id>:host:pid" inside a Ray task."""
    where = f"{socket.gethostname()}:{os.getpid()}"
    ray = sys.modules.get("ray")  # never imported here: only a process that uses Ray has it
    if ray is not None and ray.is_initialized():
        context = ray.get_runtime_context()
        if context.get_task_id() is not None:  # a Ray worker running a task, not the driver
            return f"ray:{context.get_node_id()[:12]}:{where}"
    return where


def count_tokens(counters: dict, rows: list[dict]) -> None:
    counters["n_items"] += len(rows)
    counters["n_prompt_tokens"] += sum(r["n_prompt_tokens"] for r in rows)
    counters["n_completion_tokens"] += sum(r["n_completion_tokens"] for r in rows)


# ----------------------------------------------------------------------------- resume


def checkpoint_path(key: RoundKey, name: str) -> Path:
    """Where stage `name` of `key` records that it completed, with its return value."""
    return (Path(key.home) / key.run_id / "_checkpoints" / f"arm={key.arm}" / f"seed={key.seed}"
            / f"round={key.round}" / f"{name}.pkl")  # fmt: skip


def resumable(key: RoundKey, name: str, compute: Callable[[], T]) -> T:
    """Run a stage once per (run, arm, seed, round, stage[, level or shard]).

    The first time, `compute()` runs and its return value is pickled to the stage's
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
        log.info("%s arm=%s seed=%d round=%d: %s already completed, skipped", key.run_id, key.arm, key.seed,
                 key.round, name)  # fmt: skip
        return value
    value = compute()
    write_atomic(path, lambda tmp: tmp.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)))
    fault_point(f"after:{name.split('-')[0]}")
    return value


# Crash tests: PIDISTILL_FAULT_KILL_AT="sample#2" makes this process SIGKILL itself the
# second time it reaches the point named `sample` (points: sample, train, and
# after:<stage> once a stage's checkpoint is saved). Unset in normal use: costs one lookup.
_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get("PIDISTILL_FAULT_KILL_AT")
    if not spec:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    for item in spec.split(","):
        point, _, nth = item.strip().partition("#")
        if point == name and _fault_hits[name] == int(nth or 1):
            log.warning("PIDISTILL_FAULT_KILL_AT=%s: killing this process (SIGKILL) at %s", spec, name)
            os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- retries


_NOT_INFRASTRUCTURE = ("ValueError", "KeyError", "TypeError", "PILeak", "VerifierErrorRate", "PreflightError",
                       "ConfigError", "DomainError", "AssertionError")  # fmt: skip
_INFRA_WORDS = ("out of memory", "cuda", "nccl", "cublas", "cudnn", "device-side", "worker died", "connection")


def is_infrastructure_failure(exc: BaseException | None) -> bool:
    """A failure of the machine, not of the data or the code path: out of memory, a lost
    device or connection, a crashed worker or sandbox. Only these are worth retrying."""
    if exc is None or any(c.__name__ in _NOT_INFRASTRUCTURE for c in type(exc).__mro__):
        return False
    if isinstance(exc, (MemoryError, OSError, TimeoutError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"OutOfMemoryError", "SandboxError", "RayTaskError", "WorkerCrashedError", "ActorDiedError"}:
        return True
    return isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in _INFRA_WORDS)


def retry_on_infrastructure(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a failed stage only for an infrastructure failure.
    A wrong answer is a verdict, never an exception, so it is never retried."""
    try:
        exc = state.result(raise_on_failure=False)
    except BaseException as e:  # noqa: BLE001 - the state's own exception
        exc = e
    return is_infrastructure_failure(exc if isinstance(exc, BaseException) else None)
