"""Deterministic ids and seeds from any parts: the same config and seed give the same numbers on rerun.

    >>> hash_int(0, 3)              # the first 32 bits of sha256("0:3")
    >>> hash_hex("run", "arm", 0)   # 20 hex digits, e.g. an attempt id

One hash for every seed and id in pidistill (stage seeds, sampler chunk seeds, attempt ids, the arith
train/test split), so a changed derivation is a change in one place.
"""

from __future__ import annotations

import hashlib


def _digest(parts: tuple[object, ...]) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def hash_int(*parts: object) -> int:
    """An unsigned 32-bit integer from `parts` (joined with ':')."""
    return int(_digest(parts)[:8], 16)


def hash_hex(*parts: object, n: int = 20) -> str:
    """`n` hex digits from `parts` (joined with ':')."""
    return _digest(parts)[:n]
