"""The vLLM backend (`models.sampling.vllm`) on vLLM's CPU build: the shared Sampler contract,
seeds independent of batching, agreement with HF, LoRA adapters through LoRARequest, teardown."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.sampling import vllm_available

# Not pytest.importorskip("vllm"): without vLLM, `import vllm` finds this folder (tests/ is on sys.path).
if not vllm_available():
    pytest.skip("vLLM is not installed here: its tests run in their own lane, make test-vllm", allow_module_level=True)

import psutil
import sampler_contract as contract

from models.loading import load_tokenizer
from models.policy import policy_digest
from models.sampling import get_sampler, release_samplers
from models.sampling.hf import HFSampler
from models.sampling.vllm import VLLMSampler

pytestmark = pytest.mark.slow
# vLLM's CPU build here, its CUDA build on a GPU machine; float32 on both so greedy output can match HF's.
DEV = dict(device="auto", dtype="float32")


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.fixture(scope="module")
def sampler(tiny_model: Path):
    s = VLLMSampler(str(tiny_model), max_model_len=512, **DEV)
    yield s
    s.close()


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> HFSampler:
    return HFSampler(str(tiny_model), batch_size=64, **DEV)


@pytest.mark.parametrize("check", contract.ALL_CHECKS, ids=lambda f: f.__name__.removeprefix("check_"))
def test_vllm_sampler_contract(sampler: VLLMSampler, tiny_model: Path, check):
    if check is contract.check_shapes_and_fields:
        check(sampler, load_tokenizer(str(tiny_model)))
    else:
        check(sampler)


def test_samples_depend_on_seed_and_prompt_index_not_on_batching(sampler: VLLMSampler):
    prompts = contract.arith_prompts(12)
    kw = dict(n=3, temperature=1.0, max_new_tokens=40, stop=("\n",), seed=11)
    full = sampler.generate(prompts, **kw)
    head = sampler.generate(prompts[:4], **kw)
    assert contract.texts(full[:4]) == contract.texts(head)
    assert all(len(g) == 3 for g in full) and sum(len(set(g)) > 1 for g in contract.texts(full)) >= 4


def test_greedy_matches_the_hf_backend(sampler: VLLMSampler, hf: HFSampler):
    """Same model, same prompt tokens, float32 both: greedy agrees, and so do token counts."""
    prompts = contract.arith_prompts(20)
    kw = dict(temperature=0.0, max_new_tokens=40, stop=("\n",))
    a, b = sampler.generate(prompts, **kw), hf.generate(prompts, **kw)
    same = [(x, y) for [x], [y] in zip(a, b) if x.text == y.text]
    assert len(same) >= 18, [(x[0].text, y[0].text) for x, y in zip(a, b)]
    for x, y in same:
        assert (x.n_prompt_tokens, x.n_completion_tokens, x.finish_reason) == (
            y.n_prompt_tokens,
            y.n_completion_tokens,
            y.finish_reason,
        )


def test_lora_adapters_go_through_one_engine(tiny_model: Path, adapters, sampler: VLLMSampler, hf: HFSampler):
    """An adapter folder loads its base with enable_lora; get_sampler switches adapters on that engine
    (no merge, no reload); release_samplers shuts the engine's processes down."""
    first, second = adapters
    prompts = contract.arith_prompts(10)
    kw = dict(temperature=0.0, max_new_tokens=30, stop=("\n",))
    base = contract.texts(sampler.generate(prompts, **kw))
    before = _children()
    try:
        s = get_sampler("vllm", str(first), **DEV)
        engine_pids = _children() - before
        assert isinstance(s, VLLMSampler) and s.base_ref == str(tiny_model) and s.model_ref == str(first)
        assert engine_pids, "the engine core runs in child processes"
        base_digest = policy_digest(str(tiny_model))
        assert s.policy_digest == f"{policy_digest(str(first)).split('+')[0]}+{base_digest}"
        tuned = contract.texts(s.generate(prompts, **kw))
        assert tuned != base
        merged = contract.texts(HFSampler(str(first), batch_size=64, **DEV).generate(prompts, **kw))
        assert sum(x == y for x, y in zip(tuned, merged)) >= 8  # HF merges the same adapter in

        assert get_sampler("vllm", str(second), **DEV) is s and s.model_ref == str(second)
        assert s.policy_digest == policy_digest(str(second)) != policy_digest(str(first))  # switched with it
        other = contract.texts(s.generate(prompts, **kw))
        assert other != tuned and other != base
        assert get_sampler("vllm", str(tiny_model), **DEV) is s  # the base itself: no adapter
        assert s.policy_digest == base_digest
        assert contract.texts(s.generate(prompts, **kw)) == base
        sampled = dict(n=2, temperature=1.0, max_new_tokens=30, stop=("\n",), seed=5)
        assert contract.texts(s.generate(prompts, **sampled)) == contract.texts(sampler.generate(prompts, **sampled))
    finally:
        release_samplers()
    assert s.llm is None and not _alive(engine_pids)
    with pytest.raises(RuntimeError, match="after close"):
        s.generate(prompts)


def test_device_must_match_the_vllm_build(tiny_model: Path):
    from vllm.platforms import current_platform

    wrong = "cpu" if current_platform.is_cuda_alike() else "cuda"
    with pytest.raises(RuntimeError, match=f"model.device is '{wrong}'"):
        VLLMSampler(str(tiny_model), device=wrong)


def test_close_gives_gpu_memory_back(tiny_model: Path):
    """On a GPU (vLLM's CUDA build): the engine takes gpu_memory_utilization of the card; close() returns it."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: on CPU, close() ends the engine processes (test_lora_adapters_go_through_one_engine)")
    free_before, total = torch.cuda.mem_get_info()
    s = VLLMSampler(str(tiny_model), device="cuda", gpu_memory_utilization=0.5)
    s.generate(contract.arith_prompts(4), n=2, max_new_tokens=16)
    free_loaded = torch.cuda.mem_get_info()[0]
    s.close()
    free_after = torch.cuda.mem_get_info()[0]
    assert free_before - free_loaded > 0.25 * total  # the KV cache is there while it runs
    assert free_before - free_after < 1 << 30  # and gone after close (less than 1 GiB left behind)


def test_the_bundled_chat_model_samples_alike_on_both_backends(smollm2: Path):
    """SmolLM2-135M-Instruct, prompts rendered by its chat template (issue 16): the Sampler contract's
    shapes and token counts, and greedy agreement with HF on the same prompt tokens."""
    from domains import get_domain
    from domains.pi import first_messages
    from models.prompts import prompt_ids, prompt_style, render

    release_samplers()
    tok = load_tokenizer(str(smollm2))
    domain = get_domain("arith", max_ops=1, max_operand=20)
    style = prompt_style(tok, "on")
    prompts = [render(tok, style, domain.prompt(p), first_messages(domain, p)) for p in domain.load("test", 8)]
    kw = dict(temperature=0.0, max_new_tokens=32, stop=domain.chat_stop)
    s = VLLMSampler(str(smollm2), max_model_len=1024, **DEV)
    try:
        a = s.generate(prompts, **kw)
    finally:
        s.close()
    b = HFSampler(str(smollm2), batch_size=8, **DEV).generate(prompts, **kw)
    for prompt, [x], [y] in zip(prompts, a, b):
        assert x.n_prompt_tokens == y.n_prompt_tokens == len(prompt_ids(tok, prompt))
        assert "<|im_end|>" not in x.text and x.finish_reason in ("stop", "length")
    assert sum(x.text == y.text for [x], [y] in zip(a, b)) >= 6, [(x[0].text, y[0].text) for x, y in zip(a, b)]


def test_engine_settings_of_the_config_reach_the_engine(tiny_model: Path):
    """`sampling.max_model_len` & co. (SamplingConfig.engine_options) go to vllm.LLM through get_sampler."""
    try:
        s = get_sampler("vllm", str(tiny_model), engine={"max_model_len": 256}, **DEV)
        assert s.llm.llm_engine.model_config.max_model_len == 256
    finally:
        release_samplers()
