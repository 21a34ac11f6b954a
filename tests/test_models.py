"""The tiny model, the HF sampler's contract, and TRL SFT (full and LoRA) on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domains import get_domain
from experiments.config import TinyModelConfig, TrainConfig
from models.sampling.base import Sampler, cut_at_stop
from models.sampling.hf import HFSampler
from models.tiny import build_tokenizer, recipe_hash, tiny_model_dir
from models.training.sft import train_sft

pytestmark = pytest.mark.slow


def test_tiny_model_lands_in_the_pass_window(tiny_model: Path):
    info = json.loads((tiny_model / "pretrain.json").read_text())
    recipe = TinyModelConfig()
    assert recipe.target_low <= info["base_pass_at_1"] <= recipe.target_high
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


def test_sampler_contract(sampler: HFSampler):
    assert isinstance(sampler, Sampler)
    prompts = _prompts(10)
    out = sampler.generate(prompts, n=3, temperature=1.0, max_new_tokens=40, stop=("\n",), seed=7)
    assert len(out) == 10 and all(len(o) == 3 for o in out)
    for group in out:
        for c in group:
            assert "\n" not in c.text and c.n_completion_tokens > 0 and c.n_prompt_tokens > 5
            assert c.finish_reason in ("stop", "length")


def test_sampler_is_reproducible_per_seed(sampler: HFSampler):
    prompts = _prompts(20)
    kw = dict(n=2, temperature=1.0, max_new_tokens=40, stop=("\n",))
    a = sampler.generate(prompts, seed=1, **kw)
    b = sampler.generate(prompts, seed=1, **kw)
    c = sampler.generate(prompts, seed=2, **kw)
    text = lambda out: [[x.text for x in g] for g in out]  # noqa: E731
    assert text(a) == text(b)
    assert text(a) != text(c)


def test_greedy_ignores_seed_and_repeats(sampler: HFSampler):
    prompts = _prompts(5)
    a = sampler.generate(prompts, n=2, temperature=0.0, max_new_tokens=40, seed=1)
    b = sampler.generate(prompts, n=2, temperature=0.0, max_new_tokens=40, seed=9)
    assert [[x.text for x in g] for g in a] == [[x.text for x in g] for g in b]
    assert all(g[0] == g[1] for g in a)


def test_batching_does_not_change_greedy_results(tiny_model: Path):
    prompts = _prompts(12)
    small = HFSampler(str(tiny_model), device="cpu", batch_size=3).generate(prompts, temperature=0.0, max_new_tokens=40)
    big = HFSampler(str(tiny_model), device="cpu", batch_size=64).generate(prompts, temperature=0.0, max_new_tokens=40)
    assert [g[0].text for g in small] == [g[0].text for g in big]


def test_length_limit_is_reported(sampler: HFSampler):
    [[c]] = sampler.generate(_prompts(1), temperature=0.0, max_new_tokens=2)
    assert c.finish_reason == "length" and c.n_completion_tokens == 2


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
    score = lambda s: sum(d.check(p, o[0].text).passed for p, o in zip(problems, s.generate(prompts, **kw)))  # noqa: E731
    assert score(after) > score(before)  # it learned its training problems
