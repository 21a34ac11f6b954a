"""Samplers behind one protocol (`base.Sampler`); `get_sampler` keeps one loaded per process.

Loading a model costs seconds to minutes: a round asks for the same model for its
first tries, its retries and (after training) a new one for evaluation, so the
last sampler is kept and reused until another model is asked for or
`release_samplers()` frees it (the train stage does, before training).
"""

from __future__ import annotations

import threading

from models.sampling.base import Completion, Sampler, cut_at_stop

__all__ = ["Completion", "Sampler", "cut_at_stop", "get_sampler", "release_samplers"]

_lock = threading.Lock()
_current: tuple[tuple, Sampler] | None = None


def get_sampler(backend: str, model_ref: str, device: str = "auto", dtype: str = "auto", batch_size: int = 64) -> Sampler:
    global _current
    key = (backend, model_ref, device, dtype, batch_size)
    with _lock:
        if _current is not None and _current[0] == key:
            return _current[1]
        if _current is not None:
            _current[1].close()
            _current = None
        if backend != "hf":
            raise NotImplementedError(f"sampling.backend={backend!r}: only 'hf' is built so far")
        from models.sampling.hf import HFSampler

        sampler = HFSampler(model_ref, device=device, dtype=dtype, batch_size=batch_size)
        _current = (key, sampler)
        return sampler


def release_samplers() -> None:
    """Free the kept sampler (and its GPU memory)."""
    global _current
    with _lock:
        if _current is not None:
            _current[1].close()
            _current = None
