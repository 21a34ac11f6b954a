"""Shards of a sample/verify stage (`scale.shards`): how requests are split, and what pins a shard's numbers.

    >>> [len(p) for p in split_requests(requests, 3)]    # 10 problems, one request each
    [4, 3, 3]

A shard is a contiguous run of whole problems (every request, and so every sample, of a
problem is in one shard), cut so shards hold about the same number of requests. The split
depends only on the requests and the shard count: the same shards wherever they run.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, TypeVar


class _OfProblem(Protocol):
    @property
    def problem(self) -> Any: ...  # a domains.Problem: has .problem_id


R = TypeVar("R", bound=_OfProblem)  # a SampleRequest


def split_requests(requests: Sequence[R], shards: int) -> list[list[R]]:
    """`requests` in at most `shards` non-empty contiguous shards, whole problems each.

    Requests are grouped by problem in order of first appearance (a no-op for the stages'
    requests, where a problem's requests are already adjacent), so concatenating the shards
    gives the requests back in that order. Fewer problems than shards: fewer shards."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    groups: dict[str, list[R]] = {}
    for r in requests:
        groups.setdefault(r.problem.problem_id, []).append(r)
    total = len(requests)
    out: list[list[R]] = [[] for _ in range(shards)]
    before = 0
    for group in groups.values():
        # A problem goes to the shard its first request falls in when cutting `total` evenly.
        out[min(shards - 1, before * shards // total)].extend(group)
        before += len(group)
    return [part for part in out if part]


def stage_threads(scale: Any, shard: int | None = None) -> AbstractContextManager[None]:
    """The torch thread count a stage runs with: a shard's pinned `threads_per_shard` (its numbers must not
    depend on where it runs), else `torch_threads` when set, else torch's own default."""
    from models.loading import torch_threads

    n = scale.threads_per_shard if shard is not None else scale.torch_threads
    return torch_threads(n) if n is not None else nullcontext()
