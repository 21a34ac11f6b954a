"""The HF sampler against the shared Sampler contract (`sampler_contract`), adapter folders, and
backend selection without vLLM (its own lane: `make test-vllm`, tests/vllm)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sampler_contract as contract

from models.loading import adapter_base, load_tokenizer
from models.sampling import get_sampler, release_samplers, resolve_backend, vllm_available
from models.sampling.hf import HFSampler

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sampler(tiny_model: Path) -> HFSampler:
    return HFSampler(str(tiny_model), device="cpu", batch_size=64)


@pytest.mark.parametrize("check", contract.ALL_CHECKS, ids=lambda f: f.__name__.removeprefix("check_"))
def test_hf_sampler_contract(sampler: HFSampler, tiny_model: Path, check):
    if check is contract.check_shapes_and_fields:
        check(sampler, load_tokenizer(str(tiny_model)))
    else:
        check(sampler)


def test_hf_sampler_loads_a_lora_adapter_folder(sampler: HFSampler, tiny_model: Path, tmp_path: Path):
    adapter = contract.make_lora_adapter(tiny_model, tmp_path / "adapter", seed=1)
    assert adapter_base(str(adapter)) == str(tiny_model) and adapter_base(str(tiny_model)) is None
    tuned = HFSampler(str(adapter), device="cpu", batch_size=16)
    prompts = contract.arith_prompts(8)
    kw = dict(temperature=0.0, max_new_tokens=30, stop=("\n",))
    assert tuned.model_ref == str(adapter)
    assert contract.texts(tuned.generate(prompts, **kw)) != contract.texts(sampler.generate(prompts, **kw))
    contract.check_greedy_ignores_seed_and_repeats(tuned)


def test_auto_backend_is_hf_without_a_gpu(tiny_model: Path):
    import torch

    if torch.cuda.is_available() and vllm_available():
        pytest.skip("vLLM and a GPU are here: auto means vllm")
    assert resolve_backend("auto") == "hf" and resolve_backend("hf") == "hf" and resolve_backend("vllm") == "vllm"
    assert resolve_backend("auto", device="cpu") == "hf"
    with pytest.raises(ValueError, match="expected hf, vllm or auto"):
        resolve_backend("sglang")
    try:
        s = get_sampler("auto", str(tiny_model), device="cpu", batch_size=8)
        assert s.name == "hf" and get_sampler("hf", str(tiny_model), device="cpu", batch_size=8) is s
    finally:
        release_samplers()


def test_vllm_backend_without_vllm_fails_clearly(tiny_model: Path):
    if vllm_available():
        pytest.skip("vllm is installed here")
    from experiments.config import load_config
    from tasks.runs import PreflightError, preflight

    with pytest.raises(RuntimeError, match=r"pip install 'pidistill\[gpu\]'"):
        get_sampler("vllm", str(tiny_model), device="cpu")
    with pytest.raises(
        PreflightError, match=r"sampling.backend='vllm'.*pip install 'pidistill\[gpu\]'.*make test-vllm"
    ):
        preflight(load_config("demo", ["sampling.backend=vllm"]))
    preflight(load_config("demo", ["sampling.backend=auto"]))  # auto always passes
