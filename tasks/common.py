"""What every stage shares: the round key, the domain of a config, seeds derived per stage."""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from domains import Domain, Problem, get_domain
from experiments.config import DomainConfig, ExperimentConfig
from storage.writer import shard_path, write_rows


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
def metered(keys: RoundKey | list[RoundKey], stage: str, attempt_idx: int = 0, model_ref: str = "") -> Iterator[dict]:
    """Time a stage and write its `stages` row (the caller fills the counters in the yielded dict)."""
    counters = {"n_items": 0, "n_prompt_tokens": 0, "n_completion_tokens": 0, "verifier_calls": 0}
    started, t0, c0 = now(), time.perf_counter(), time.process_time()
    yield counters
    spent = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    for key in keys if isinstance(keys, list) else [keys]:
        row = {**key.columns(), "stage": stage, "attempt_idx": attempt_idx, "model_ref": model_ref,
               **counters, **spent, "started_at": started}
        write_rows(key.path("stages", f"{stage}-{attempt_idx}"), [row], "stages")


def count_tokens(counters: dict, rows: list[dict]) -> None:
    counters["n_items"] += len(rows)
    counters["n_prompt_tokens"] += sum(r["n_prompt_tokens"] for r in rows)
    counters["n_completion_tokens"] += sum(r["n_completion_tokens"] for r in rows)
