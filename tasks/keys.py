"""What names a stage's output and seeds its randomness: the round key, stage seeds, attempt ids.

>>> key = RoundKey("demo-20261204-101500-3f2a", "retry", 0, 1, "/abs/runs")
>>> key.path("attempts", "sample-0")   # .../demo-.../attempts/arm=retry/seed=0/round=1/sample-0-0.parquet
>>> derive_seed(0, 1, "train", 0)      # the same number on every rerun of this config
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.ids import hash_hex, hash_int
from storage.schema import Attempt
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

    def write(self, table: str, stage: str, rows: Iterable[Mapping[str, Any] | Attempt], shard: int = 0) -> Path:
        """Write a stage's rows of `table` to its shard. A stage run again (a resumed run) rewrites the same
        path: that replace waits for running queries (`storage.lock`), a first write needs no wait."""
        return write_rows(self.path(table, stage, shard), rows, table, readers=Path(self.home))

    def columns(self) -> dict:
        return {"run_id": self.run_id, "arm": self.arm, "seed": self.seed, "round": self.round}


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts, e.g. derive_seed(seed, round, "sample", attempt_idx)."""
    return hash_int(*parts) & 0x7FFFFFFF


def attempt_id(*parts: object) -> str:
    """Deterministic: a rerun of the same config and seed gives the same ids."""
    return hash_hex(*parts)
