"""The Sampler contract as checks over any backend (`models.sampling.base`): each `check_*` takes a
loaded sampler; `tests/test_sampler_contract.py` runs them on HF, `tests/vllm/` on vLLM.

Also `make_lora_adapter`: a PEFT LoRA adapter with random non-zero weights on a local model, saved
like a trained one, so adapter loading can be tested without training.
"""

from __future__ import annotations

from pathlib import Path

from domains import get_domain
from models.prompts import prompt_ids
from models.sampling.base import Sampler


def arith_prompts(n: int) -> list[str]:
    d = get_domain("arith")
    return [d.prompt(p) for p in d.load("test", limit=n)]


def texts(out) -> list[list[str]]:
    return [[c.text for c in group] for group in out]


def check_shapes_and_fields(sampler: Sampler, tokenizer=None) -> None:
    """One list of n completions per prompt, in prompt order; counts and finish reasons filled."""
    assert isinstance(sampler, Sampler) and sampler.name and sampler.model_ref
    prompts = arith_prompts(8)
    out = sampler.generate(prompts, n=3, temperature=1.0, max_new_tokens=40, stop=("\n",), seed=7)
    assert len(out) == 8 and all(len(group) == 3 for group in out)
    for prompt, group in zip(prompts, out):
        for c in group:
            assert "\n" not in c.text and c.n_completion_tokens > 0 and c.n_prompt_tokens > 5
            assert c.finish_reason in ("stop", "length")
            if tokenizer is not None:  # prompts are tokenized without special tokens
                assert c.n_prompt_tokens == len(prompt_ids(tokenizer, prompt))
    assert sampler.generate([], n=2, seed=0) == []


def check_reproducible_per_seed(sampler: Sampler) -> None:
    prompts = arith_prompts(12)
    kw = dict(n=2, temperature=1.0, max_new_tokens=40, stop=("\n",))
    a = sampler.generate(prompts, seed=1, **kw)
    b = sampler.generate(prompts, seed=1, **kw)
    c = sampler.generate(prompts, seed=2, **kw)
    assert texts(a) == texts(b)
    assert texts(a) != texts(c)
    assert [[x.n_completion_tokens for x in g] for g in a] == [[x.n_completion_tokens for x in g] for g in b]


def check_n_samples_differ(sampler: Sampler) -> None:
    """n draws of one prompt are separate samples, not copies."""
    out = sampler.generate(arith_prompts(6), n=4, temperature=1.0, max_new_tokens=40, stop=("\n",), seed=3)
    assert all(len(group) == 4 for group in out)
    assert sum(len(set(group)) > 1 for group in texts(out)) >= 3


def check_greedy_ignores_seed_and_repeats(sampler: Sampler) -> None:
    prompts = arith_prompts(5)
    a = sampler.generate(prompts, n=2, temperature=0.0, max_new_tokens=40, seed=1)
    b = sampler.generate(prompts, n=2, temperature=0.0, max_new_tokens=40, seed=9)
    assert texts(a) == texts(b)
    assert all(g[0] == g[1] for g in a)


def check_greedy_independent_of_batch(sampler: Sampler) -> None:
    """A prompt's greedy completion does not depend on the other prompts of the call."""
    prompts = arith_prompts(12)
    kw = dict(temperature=0.0, max_new_tokens=40)
    together = sampler.generate(prompts, **kw)
    apart = sampler.generate(prompts[:5], **kw) + sampler.generate(prompts[5:], **kw)
    assert texts(together) == texts(apart)


def check_length_limit(sampler: Sampler) -> None:
    [[c]] = sampler.generate(arith_prompts(1), temperature=0.0, max_new_tokens=2)
    assert c.finish_reason == "length" and c.n_completion_tokens == 2


def check_stop_strings_are_cut(sampler: Sampler) -> None:
    """The tiny model answers 'a+b=c. #### c': stopping at '=' leaves 'a+b', reason stop,
    and the stop string's tokens still count as generated."""
    prompts = arith_prompts(6)
    free = sampler.generate(prompts, temperature=0.0, max_new_tokens=40)
    cut = sampler.generate(prompts, temperature=0.0, max_new_tokens=40, stop=("=", "####"))
    for [f], [c] in zip(free, cut):
        assert "=" not in c.text and "####" not in c.text and f.text.startswith(c.text)
        if "=" in f.text:
            assert c.finish_reason == "stop" and c.text == f.text[: f.text.index("=")]
            assert 0 < c.n_completion_tokens <= f.n_completion_tokens


ALL_CHECKS = [
    check_shapes_and_fields,
    check_reproducible_per_seed,
    check_n_samples_differ,
    check_greedy_ignores_seed_and_repeats,
    check_greedy_independent_of_batch,
    check_length_limit,
    check_stop_strings_are_cut,
]


def make_lora_adapter(model_dir: Path, out_dir: Path, seed: int = 0, r: int = 8) -> Path:
    """Save a LoRA adapter with random non-zero A and B (a visible change to greedy output)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = LoraConfig(
        r=r, lora_alpha=2 * r, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(str(out_dir))
    return out_dir
