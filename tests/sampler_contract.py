"""The Sampler contract as checks over any backend (`models.sampling.base`): each `check_*` takes a
loaded sampler; `tests/test_sampler_contract.py` runs them on HF, `tests/vllm/` on vLLM.

Also `make_lora_adapter`: a PEFT LoRA adapter with random non-zero weights on a local model, saved
like a trained one, so adapter loading can be tested without training.
"""

from __future__ import annotations

from pathlib import Path

from domains import get_domain
from models.policy import policy_digest
from models.prompts import prompt_ids
from models.sampling.base import Completion, Sampler, cut_at_stop, token_sha
from tasks.resample import parse_sample_key


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


def check_token_ids_are_the_completion(sampler: Sampler) -> None:
    """Provenance: a completion's token ids are what was generated: n_completion_tokens of them, decoding to
    its text before the stop string is cut; the prompt's sha is of the ids `prompt_ids` gives; every sample
    has its seed and key, and the sampler the digest of the weights it loaded."""
    prompts = arith_prompts(8)
    tok = sampler.tokenizer
    stop = ("=",)  # cuts mid-answer: stop-string tokens are generated and counted, cut from the text
    for kw in (dict(n=3, temperature=1.0, seed=5), dict(n=2, temperature=0.0), dict(n=1, temperature=1.0)):
        out = sampler.generate(prompts, max_new_tokens=24, stop=stop, **kw)
        draws = 1 if kw["temperature"] == 0 else kw["n"]  # greedy: one draw, n copies
        for prompt, group in zip(prompts, out):
            for c in group:
                assert len(c.token_ids) == c.n_completion_tokens > 0
                assert cut_at_stop(tok.decode(list(c.token_ids), skip_special_tokens=True), stop)[0] == c.text
                assert c.prompt_token_sha == token_sha(prompt_ids(tok, prompt))
                assert c.sampler_seed is not None and parse_sample_key(str(c.sample_key))[3] == draws
    [[c]] = sampler.generate(prompts[:1], temperature=0.0, max_new_tokens=2)
    assert c.finish_reason == "length" and len(c.token_ids) == 2
    assert sampler.policy_digest is not None and sampler.policy_digest == policy_digest(sampler.model_ref)


def _same(a: Completion, b: Completion) -> bool:
    """The same sample: text, token ids, counts, finish reason and prompt."""
    fields = ("text", "token_ids", "n_completion_tokens", "finish_reason", "prompt_token_sha")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def _draw_of(out: list[list[Completion]], target: Completion) -> list[tuple[int, Completion]]:
    """(prompt index, completion) of every completion that shares `target`'s seed: its draw."""
    return [(i, c) for i, group in enumerate(out) for c in group if c.sampler_seed == target.sampler_seed]


def check_resample_reproduces_an_attempt(sampler: Sampler) -> None:
    """Re-sampling an attempt from its recorded seed and key gives it again, token for token. vLLM: its one
    prompt alone, whatever else the call held. HF: its chunk, run again, gives every sample of the chunk."""
    prompts = arith_prompts(10)
    kw = dict(n=3, temperature=1.0, max_new_tokens=40, stop=("\n",))
    out = sampler.generate(prompts, seed=21, **kw)
    target = out[7][2]
    draw = _draw_of(out, target)
    j, n_prompts, d, n = parse_sample_key(target.sample_key)
    assert n == 3 and len(draw) == n_prompts * n
    chunk = {parse_sample_key(c.sample_key)[0]: prompts[i] for i, c in draw}
    if sampler.name == "vllm":  # a request is seeded alone: the draw is one prompt
        assert n_prompts == 1 and chunk == {0: prompts[7]}
    again = sampler.resample([chunk[k] for k in range(n_prompts)], target.sampler_seed, **kw)
    assert _same(again[j][d], target) and again[j][d].sampler_seed == target.sampler_seed
    for _, c in draw:  # the rest of the draw too
        k, _, e, _ = parse_sample_key(c.sample_key)
        assert _same(again[k][e], c)
    other = sampler.resample([chunk[k] for k in range(n_prompts)], target.sampler_seed + 1000, **kw)
    assert [[c.token_ids for c in g] for g in other] != [[c.token_ids for c in g] for g in again]


ALL_CHECKS = [
    check_shapes_and_fields,
    check_reproducible_per_seed,
    check_n_samples_differ,
    check_greedy_ignores_seed_and_repeats,
    check_greedy_independent_of_batch,
    check_length_limit,
    check_stop_strings_are_cut,
    check_token_ids_are_the_completion,
    check_resample_reproduces_an_attempt,
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
