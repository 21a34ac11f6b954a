"""Which CUDA devices a process may use, and how concurrent chains split them (flows/chains.py).
No torch import until one is needed: the preflight checks a config with it."""

from __future__ import annotations

import os

from experiments.config import ConfigError


def visible_devices() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES would list them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def device_sets(chains: int, gpus_per_chain: int, devices: list[str]) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES of each worker slot; None when chains are not pinned (gpus_per_chain 0)."""
    if gpus_per_chain == 0:
        return None
    need = chains * gpus_per_chain
    if need > len(devices):
        raise ConfigError(
            f"scale.chains={chains} x scale.gpus_per_chain={gpus_per_chain} needs {need} GPUs; "
            f"this process sees {len(devices)} ({','.join(devices) or 'none'})"
        )
    return [",".join(devices[i * gpus_per_chain : (i + 1) * gpus_per_chain]) for i in range(chains)]
