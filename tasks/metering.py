"""What a stage cost: one `stages` row per stage (and shard) with wall and CPU time, items and tokens.

>>> with metered(key, "sample", attempt_idx=1, model_ref=ref) as m:
...     rows = draw(...)
...     count_tokens(m, rows)
# -> stages/arm=retry/seed=0/round=1/sample-1-0.parquet:
#    {"stage": "sample", "attempt_idx": 1, "n_items": 48, "n_prompt_tokens": 1920, "seconds": 3.1, ...}
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from storage.schema import Attempt
from tasks.keys import RoundKey


def now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def metered(
    keys: RoundKey | list[RoundKey], stage: str, attempt_idx: int = 0, model_ref: str = "", shard: int | None = None
) -> Iterator[dict]:
    """Time a stage and write its `stages` row (the caller fills the counters in the yielded dict).
    Each shard of a sharded stage writes its own row (`<stage>-<attempt_idx>-<shard>.parquet`)."""
    counters = {"n_items": 0, "n_prompt_tokens": 0, "n_completion_tokens": 0, "verifier_calls": 0}
    started, t0, c0 = now(), time.perf_counter(), time.process_time()
    yield counters
    spent = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    for key in keys if isinstance(keys, list) else [keys]:
        row = {
            **key.columns(),
            "stage": stage,
            "attempt_idx": attempt_idx,
            "model_ref": model_ref,
            **counters,
            **spent,
            "started_at": started,
            "shard": shard,
            "worker": worker_name(),
        }
        key.write("stages", f"{stage}-{attempt_idx}", [row], shard=shard or 0)


def worker_name() -> str:
    """Who runs this code: "host:pid", or "ray:<node id>:host:pid" inside a Ray task."""
    where = f"{socket.gethostname()}:{os.getpid()}"
    ray = sys.modules.get("ray")  # never imported here: only a process that uses Ray has it
    if ray is not None and ray.is_initialized():
        context = ray.get_runtime_context()
        if context.get_task_id() is not None:  # a Ray worker running a task, not the driver
            return f"ray:{context.get_node_id()[:12]}:{where}"
    return where


def count_tokens(counters: dict, attempts: list[Attempt]) -> None:
    counters["n_items"] += len(attempts)
    counters["n_prompt_tokens"] += sum(a.n_prompt_tokens for a in attempts)
    counters["n_completion_tokens"] += sum(a.n_completion_tokens for a in attempts)
