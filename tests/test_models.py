"""The tiny model, the HF sampler on calls larger than one batch, and TRL SFT (full and LoRA) on CPU.

The Sampler contract itself (shapes, seeds, greedy, length and stop limits) runs on HF in
test_sampler_contract.py, where every call fits one batch; here the calls span several.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domains import get_domain
from experiments.config import TinyModelConfig, TrainConfig
from models.prompts import prompt_ids
from models.sampling.base import Sampler, cut_at_stop
from models.sampling.hf import HFSampler
from models.tiny import build_tokenizer, recipe_hash, tiny_model_dir
from models.training.sft import train_sft

pytestmark = pytest.mark.slow


# The default recipe's weights as built on 2026-12-05 (AMD EPYC, torch 2.13.0 CPU, numerics pinned to AVX2:
# models/numerics.py): 1,000 steps, selection pass@1 0.315, pass@1 0.355 on the 200 evaluation problems.
# Any x86-64 machine with AVX2 and the pinned torch builds exactly these.
TINY_WEIGHTS_SHA256 = "1a6fefd3f6372632"


def test_tiny_model_lands_in_the_pass_window_with_the_recorded_weights(tiny_model: Path):
    from domains.base import file_sha256
    from models.numerics import has_avx2

    info = json.loads((tiny_model / "pretrain.json").read_text())
    recipe = TinyModelConfig()
    assert recipe.target_low <= info["selection_pass_at_1"] <= recipe.target_high
    assert info["weights_sha256"] == file_sha256(tiny_model / "model.safetensors")
    if has_avx2():
        assert info["weights_sha256"] == TINY_WEIGHTS_SHA256, "the tiny model's weights differ from the recorded build"
    assert tiny_model == tiny_model_dir(recipe)
    assert recipe_hash(recipe) != recipe_hash(TinyModelConfig(layers=3))


def test_tokenizer_splits_digits_and_roundtrips():
    tok = build_tokenizer(["Question: What is 123 + 45?\nAnswer: 123+45=168. #### 168"] * 50, 300)
    text = "Question: What is 987 - 65?\nAnswer: 987-65=922. #### 922"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert all(len(t.strip("Ġ")) <= 1 for t in tok.convert_ids_to_tokens(tok("12345")["input_ids"]))


@pytest.fixture(scope="module")
def sampler(tiny_model: Path) -> HFSampler:
    return HFSampler(str(tiny_model), device="cpu", batch_size=16)


def _prompts(n: int) -> list[str]:
    d = get_domain("arith")
    return [d.prompt(p) for p in d.load("test", limit=n)]


def test_sampled_groups_come_back_to_their_prompts_across_chunks(sampler: HFSampler):
    """Prompts are sorted by length and cut into chunks of batch_size // n: each group of n must still
    land at its own prompt (its prompt-token count says whose it is)."""
    assert isinstance(sampler, Sampler)
    prompts = _prompts(10)
    assert len(prompts) > sampler.batch_size // 3  # more than one chunk
    out = sampler.generate(prompts, n=3, temperature=1.0, max_new_tokens=40, stop=("\n",), seed=7)
    assert len(out) == 10 and all(len(o) == 3 for o in out)
    for prompt, group in zip(prompts, out):
        for c in group:
            assert "\n" not in c.text and c.n_completion_tokens > 0 and c.n_prompt_tokens > 5
            assert c.finish_reason in ("stop", "length")
            assert c.n_prompt_tokens == len(prompt_ids(sampler.tokenizer, prompt))


def test_sampling_is_reproducible_per_seed_across_chunks(sampler: HFSampler):
    """Each chunk's RNG is seeded from (seed, chunk): a call of several chunks repeats exactly."""
    prompts = _prompts(20)
    kw = dict(n=2, temperature=1.0, max_new_tokens=40, stop=("\n",))
    assert len(prompts) > 2 * (sampler.batch_size // kw["n"])  # three chunks
    a = sampler.generate(prompts, seed=1, **kw)
    b = sampler.generate(prompts, seed=1, **kw)
    c = sampler.generate(prompts, seed=2, **kw)
    text = lambda out: [[x.text for x in g] for g in out]
    assert text(a) == text(b)
    assert text(a) != text(c)


def test_an_attempt_in_a_later_chunk_is_resampled_by_running_its_chunk_again(sampler: HFSampler):
    """Provenance across chunks: each chunk has its own seed and keys; the attempts sharing a seed are one
    chunk's prompts, and `resample` of them (in key order) repeats that chunk exactly."""
    from tasks.resample import parse_sample_key

    prompts = _prompts(20)
    kw = dict(n=2, temperature=1.0, max_new_tokens=40, stop=("\n",))
    out = sampler.generate(prompts, seed=4, **kw)
    seeds = {c.sampler_seed for g in out for c in g}
    assert len(seeds) == 3  # 20 prompts, 8 a chunk
    target = max((c for g in out for c in g), key=lambda c: c.sample_key)  # "chunk 2 ..."
    mates = {
        parse_sample_key(c.sample_key)[0]: p
        for p, g in zip(prompts, out)
        for c in g
        if c.sampler_seed == target.sampler_seed
    }
    j, n_prompts, d, n = parse_sample_key(target.sample_key)
    assert target.sample_key.startswith("chunk 2 ") and sorted(mates) == list(range(n_prompts)) and n == 2
    again = sampler.resample([mates[k] for k in range(n_prompts)], target.sampler_seed, **kw)
    assert (again[j][d].text, again[j][d].token_ids) == (target.text, target.token_ids)


def test_batching_does_not_change_greedy_results(tiny_model: Path):
    prompts = _prompts(12)
    small = HFSampler(str(tiny_model), device="cpu", batch_size=3).generate(prompts, temperature=0.0, max_new_tokens=40)
    big = HFSampler(str(tiny_model), device="cpu", batch_size=64).generate(prompts, temperature=0.0, max_new_tokens=40)
    assert [g[0].text for g in small] == [g[0].text for g in big]


def test_cut_at_stop():
    assert cut_at_stop("a\nb", ["\n"]) == ("a", True)
    assert cut_at_stop("abXcdY", ["Y", "X"]) == ("ab", True)
    assert cut_at_stop("abc", []) == ("abc", False)


@pytest.mark.parametrize("peft", ["full", "lora"])
def test_sft_trains_saves_and_changes_the_model(tiny_model: Path, tmp_path: Path, peft: str):
    d = get_domain("arith")
    problems = d.load("train", limit=32)
    examples = [{"prompt": d.prompt(p), "completion": p.solution} for p in problems]
    cfg = TrainConfig(lr=1e-3, epochs=2, batch_size=8, peft=peft, lora_r=8)
    result = train_sft(str(tiny_model), examples, cfg, tmp_path / "ckpt", seed=0, device="cpu")
    assert result.steps == 8 and result.n_examples == 32 and result.final_loss is not None
    assert (tmp_path / "ckpt" / "config.json").exists() and not list(tmp_path.glob("*.tmp-*"))
    assert not (tmp_path / "ckpt" / "adapter_config.json").exists()  # LoRA is merged: a plain model folder
    before = HFSampler(str(tiny_model), device="cpu")
    after = HFSampler(result.checkpoint, device="cpu")
    prompts = [d.prompt(p) for p in problems]
    kw = dict(temperature=0.0, max_new_tokens=40, stop=d.stop)
    score = lambda s: sum(d.check(p, o[0].text).passed for p, o in zip(problems, s.generate(prompts, **kw)))
    assert score(after) > score(before)  # it learned its training problems


def _changed_share(before: Path, after: Path) -> float:
    """The share of weights that differ between two checkpoints (compared in fp32)."""
    from safetensors.torch import load_file

    a, b = load_file(before / "model.safetensors"), load_file(after / "model.safetensors")
    changed = sum(int((a[k].float() != b[k].float()).sum()) for k in a)
    return changed / sum(v.numel() for v in a.values())


@pytest.mark.parametrize("peft", ["full", "lora"])
def test_a_tiny_learning_rate_under_bf16_still_moves_the_weights(tiny_model: Path, tmp_path: Path, peft: str):
    """Issue 16: trained in bf16 weights, an Adam step at lr 1e-6 changed ~2 % of them (the rest rounded
    away). Training keeps fp32 master weights (bf16 is autocast on CUDA) and saves them; a LoRA adapter
    merges into fp32."""
    import torch
    from safetensors.torch import load_file

    d = get_domain("arith")
    examples = [{"prompt": d.prompt(p), "completion": p.solution} for p in d.load("train", limit=8)]
    cfg = TrainConfig(lr=1e-6, epochs=1, batch_size=8, peft=peft, lora_r=8, lora_alpha=16)
    result = train_sft(str(tiny_model), examples, cfg, tmp_path / "ckpt", seed=0, device="cpu", dtype="bfloat16")
    assert result.steps == 1
    saved = load_file(Path(result.checkpoint) / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in saved.values())
    share = _changed_share(tiny_model, Path(result.checkpoint))
    # full: every weight with a gradient moves; LoRA: the merged delta reaches the adapted projections
    assert share > (0.9 if peft == "full" else 0.3), share


def test_opsd_under_bf16_keeps_fp32_master_weights(tiny_model: Path, tmp_path: Path):
    from experiments.config import OPSDConfig
    from models.training.opsd import train_opsd

    d = get_domain("arith")
    cfg = TrainConfig(method="opsd", lr=1e-6, opsd=OPSDConfig(steps=1, batch_size=4))
    result = train_opsd(
        str(tiny_model),
        d.load("train", limit=4),
        d,
        cfg,
        tmp_path / "ckpt",
        seed=0,
        max_new_tokens=16,
        device="cpu",
        dtype="bfloat16",
    )
    import torch
    from safetensors.torch import load_file

    saved = load_file(Path(result.checkpoint) / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in saved.values())  # the master weights, not a bf16 rounding
    assert result.steps == 1 and _changed_share(tiny_model, Path(result.checkpoint)) > 0.9
