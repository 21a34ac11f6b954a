"""Provenance per attempt, without a model: the weights' digest (models/policy.py), the token hash, what the
sample stage stores from a completion (tasks/sample.py), and what a re-sample reads back (tasks/resample.py).

The checks that need a model are the Sampler contract's (`check_token_ids_are_the_completion`,
`check_resample_reproduces_an_attempt`) and the small experiment's (test_flows.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from attempt_factory import make_attempt
from safetensors.torch import save_file

from experiments.config import load_config
from models.policy import policy_digest
from models.prompts import PromptStyle
from models.sampling.base import Completion, Sampler, token_sha
from storage.ids import hash_hex
from storage.writer import shard_path, write_rows
from tasks.keys import RoundKey
from tasks.resample import NotResamplable, parse_sample_key, redraw_of
from tasks.sample import SampleRequest, draw, draw_settings, provenance


def _weights(folder: Path, value: float = 1.0, name: str = "model.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.full((4, 4), value), "b": torch.zeros(4)}, str(folder / name))
    return folder


def test_a_folders_digest_is_its_weights_and_changes_with_them(tmp_path: Path):
    a = _weights(tmp_path / "a")
    first = policy_digest(str(a))
    assert first is not None and len(first) == 16 and policy_digest(str(a)) == first
    (a / "config.json").write_text("{}")  # not weights: no change
    (a / "training_args.bin").write_bytes(b"x")
    assert policy_digest(str(a)) == first
    assert policy_digest(str(_weights(tmp_path / "copy"))) == first  # the same weights elsewhere
    _weights(a, value=2.0)  # a rewritten weight file is read again, not taken from the cache
    assert policy_digest(str(a)) not in (None, first)
    _weights(a, value=2.0, name="model-00002-of-00002.safetensors")  # a shard more
    assert policy_digest(str(a)) != policy_digest(str(_weights(tmp_path / "b", value=2.0)))
    assert policy_digest(str(tmp_path / "empty-folder")) is None
    (tmp_path / "empty-folder").mkdir()
    assert policy_digest(str(tmp_path / "empty-folder")) is None


def test_an_adapters_digest_names_its_base_too(tmp_path: Path):
    base = _weights(tmp_path / "base")
    adapter = _weights(tmp_path / "adapter", value=3.0, name="adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": 8}))
    mine = policy_digest(str(adapter))
    assert mine is not None and mine.endswith("+" + str(policy_digest(str(base))))
    _weights(base, value=5.0)  # the same adapter on other base weights is another policy
    assert policy_digest(str(adapter)) != mine


def test_a_hub_ids_digest_is_the_commit_its_cache_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert policy_digest("org/tiny") == f"hf:{commit}"
    assert policy_digest("org/not-cached") is None
    assert policy_digest(str(tmp_path / "no-such-folder")) is None


def test_token_sha_is_what_sql_recomputes():
    import duckdb

    ids = [5, 0, 17, 49151]
    [(sql,)] = duckdb.sql(f"select left(sha256(array_to_string({ids}::INTEGER[], ':')), 16)").fetchall()
    assert token_sha(ids) == token_sha(tuple(ids)) == sql == hash_hex(*ids, n=16)
    assert token_sha([]) != token_sha([0]) and token_sha([1, 23]) != token_sha([12, 3])


class _FakeSampler:
    """A Sampler without a model: completion d of prompt i is 'i.d', with made-up provenance."""

    name, model_ref, tokenizer, policy_digest = "vllm", "some/model", None, "hf:abc"

    def generate(self, prompts: Sequence[str], *, n=1, temperature=1.0, top_p=1.0, max_new_tokens=64, stop=(), seed=0):
        return [
            [
                Completion(
                    f"{i}.{d}", 3, 2, "stop", (i, d), token_sha([7, i]), seed + i, f"request {i} sample {d} of {n}"
                )
                for d in range(n)
            ]
            for i in range(len(prompts))
        ]

    def resample(self, prompts, sampler_seed, **kw):
        raise NotImplementedError

    def close(self) -> None:
        pass


def test_the_sample_stage_stores_each_completions_provenance(tmp_path: Path):
    from domains import Problem

    sampler = _FakeSampler()
    assert isinstance(sampler, Sampler)
    key = RoundKey("r", "a", 0, 1, str(tmp_path))
    requests = [SampleRequest(Problem(f"p{i}", "arith", f"q{i}"), f"Q{i}?") for i in range(2)]
    settings = draw_settings(load_config("demo"), "train", 1, 0, PromptStyle(chat=False))
    rows = draw(sampler, PromptStyle(chat=False), key, requests, phase="train", seed=100, settings=settings)
    assert len(rows) == 2 * settings.n
    last = rows[-1]
    d = settings.n - 1
    assert (last.completion_token_ids, last.sampler_seed, last.sample_key, last.policy_digest) == (
        (1, d),
        101,
        f"request 1 sample {d} of {settings.n}",
        "hf:abc",
    )
    assert last.completion_token_sha == token_sha((1, d)) and last.prompt_token_sha == token_sha([7, 1])
    write_rows(key.path("attempts", "train"), rows, "attempts")  # the columns fit the table
    bare = provenance(Completion("x", 1, 1, "stop"), None)  # a completion that says nothing of its origin
    assert bare == {"policy_digest": None}


def test_draw_settings_are_each_phases():
    cfg = load_config(
        "demo", ["sampling.n=4", "eval.n=2", "eval.max_new_tokens=33", "retry.temperature=1.3", "sampling.top_p=0.9"]
    )
    plain, chat = PromptStyle(chat=False), PromptStyle(chat=True)
    first, retry = draw_settings(cfg, "train", 1, 0, plain), draw_settings(cfg, "train", 1, 1, plain)
    assert (first.n, retry.n, retry.temperature, first.top_p) == (4, 1, 1.3, 0.9)
    assert first.stop == ("\n",) and first.max_new_tokens == cfg.sampling.max_new_tokens
    ev = draw_settings(cfg, "eval", 2, 0, plain)
    assert (ev.n, ev.temperature, ev.max_new_tokens) == (2, cfg.eval.temperature, 33)
    assert draw_settings(cfg, "diagnosis", 1, 1, plain).stop == ("\n\n",)
    assert draw_settings(cfg, "diagnosis", 1, 1, chat).stop == ()
    assert draw_settings(cfg, "diagnosis", 1, 1, plain).max_new_tokens == cfg.retry.diagnosis_max_new_tokens
    with pytest.raises(ValueError, match="opsd"):
        draw_settings(cfg, "opsd", 1, 0, plain)


def test_sample_keys_parse_for_both_backends():
    assert parse_sample_key("request 7 sample 2 of 4") == (0, 1, 2, 4)
    assert parse_sample_key("chunk 3 prompt 5 of 8 sample 1 of 2") == (5, 8, 1, 2)
    assert parse_sample_key("chunk ? prompt 0 of 1 sample 0 of 1") == (0, 1, 0, 1)
    with pytest.raises(NotResamplable, match="sample_key"):
        parse_sample_key("chunk 3 row 5")


def _runs_row(home: Path, run_id: str) -> None:
    cfg = load_config("demo")
    now = datetime.now(UTC)
    row = dict(
        run_id=run_id, experiment="demo", config_json=cfg.canonical_json(), config_hash=cfg.config_hash(),
        code_version="c", data_hash="d", started_at=now, finished_at=now, status="completed", error=None, smoke=False,
    )  # fmt: skip
    write_rows(home / run_id / "runs" / "run.parquet", [row], "runs")


def _drawn(arm: str, i: int, key: str, seed: int, prompt: str, **fields) -> object:
    return make_attempt(
        run_id="r", arm=arm, attempt_id=f"{arm}-{i}", prompt=prompt, sampler_seed=seed, sample_key=key, **fields
    )


def test_a_redraw_reads_the_attempts_draw_its_config_and_its_place_in_it(pidistill_home: Path):
    """HF: the chunk's prompts in key order (greedy copies share a key); vLLM: the attempt's prompt alone;
    another arm's rows with the same seed (arms share random numbers) are not part of it."""
    _runs_row(pidistill_home, "r")
    hf = [  # a chunk of 3 prompts x 2 samples, stored out of order
        _drawn("retry", 10 * j + d, f"chunk 4 prompt {j} of 3 sample {d} of 2", 99, f"P{j}", sampler="hf")
        for j in (2, 0, 1)
        for d in (1, 0)
    ]
    other_arm = [
        _drawn("rft", j, f"chunk 4 prompt {j} of 3 sample 0 of 2", 99, f"X{j}", sampler="hf") for j in range(3)
    ]
    vllm = [
        _drawn("retry", 100 + d, f"request 5 sample {d} of 3", 77, "V", sampler="vllm", attempt_idx=1) for d in range(3)
    ]
    vllm += [_drawn("retry", 200, "request 6 sample 0 of 3", 78, "W", sampler="vllm", attempt_idx=1)]
    old = [make_attempt(run_id="r", attempt_id="old"), make_attempt(run_id="r", attempt_id="rollout", phase="opsd")]
    write_rows(shard_path(pidistill_home, "r", "attempts", "a", 0, 1, "train"), hf + other_arm + vllm + old, "attempts")

    r = redraw_of("retry-11")  # chunk prompt 1, sample 1
    assert (r.backend, r.sampler_seed, r.prompts, r.n, r.position) == ("hf", 99, ["P0", "P1", "P2"], 2, (1, 1))
    assert r.cfg.arms[0].name == "retry" and r.attempt["attempt_id"] == "retry-11"
    v = redraw_of("retry-102")
    assert (v.backend, v.sampler_seed, v.prompts, v.n, v.position) == ("vllm", 77, ["V"], 3, (0, 2))
    with pytest.raises(NotResamplable, match="no provenance"):
        redraw_of("old")
    with pytest.raises(NotResamplable, match="OPSD"):
        redraw_of("rollout")
    with pytest.raises(NotResamplable, match="no attempt"):
        redraw_of("nope")


def test_a_draw_with_a_prompt_missing_is_not_resampled(pidistill_home: Path):
    _runs_row(pidistill_home, "r")
    rows = [_drawn("retry", j, f"chunk 0 prompt {j} of 3 sample 0 of 1", 5, f"P{j}") for j in (0, 2)]
    write_rows(shard_path(pidistill_home, "r", "attempts", "a", 0, 1, "train"), rows, "attempts")
    with pytest.raises(NotResamplable, match=r"prompts \[0, 2\], not all 3"):
        redraw_of("retry-0")


# ----------------------------------------------------------------------------- samplers, without a model


@pytest.fixture(scope="module")
def tokenizer():
    from models.tiny import build_tokenizer

    return build_tokenizer([f"Question: What is {i} + {2 * i}?\nAnswer: {3 * i}" for i in range(40)], 300)


class _DiceModel:
    """Stands in for a causal LM under HF `generate`: each row's new tokens are drawn from torch's RNG (so the
    chunk's seed decides them, as sampling does), some rows end at eos and are padded after it."""

    device = torch.device("cpu")

    def eval(self):
        return self

    def generate(
        self, input_ids, attention_mask, num_return_sequences, max_new_tokens, pad_token_id, eos_token_id, **_
    ):
        rows = input_ids.repeat_interleave(num_return_sequences, dim=0)
        new = torch.randint(2, 60, (rows.shape[0], max_new_tokens))  # 0, 1: pad, eos
        for r, end in enumerate(torch.randint(0, 2 * max_new_tokens, (rows.shape[0],)).tolist()):
            if end < max_new_tokens:
                new[r, end], new[r, end + 1 :] = eos_token_id, pad_token_id
        return torch.cat([rows, new], dim=1)


def _check_ids(c: Completion, tok, prompt: str) -> None:
    from models.prompts import prompt_ids

    assert len(c.token_ids) == c.n_completion_tokens and c.prompt_token_sha == token_sha(prompt_ids(tok, prompt))
    assert tok.decode(list(c.token_ids), skip_special_tokens=True) == c.text
    assert (c.token_ids[-1:] == (tok.eos_token_id,)) == (c.finish_reason == "stop")


def test_hf_completions_name_their_chunk_and_running_it_again_repeats_it(tokenizer):
    """The HF sampler's bookkeeping (a stand-in model): ids as generated with eos, one seed per chunk, keys
    that place each sample in its chunk, and `resample` of a chunk's prompts giving every sample again."""
    from models.sampling.hf import HFSampler

    sampler = HFSampler.from_model(_DiceModel(), tokenizer, batch_size=8)
    assert sampler.policy_digest is None  # weights in memory: no file to digest
    prompts = [f"Question: What is {i} + {i * 7}?" + " ?" * (i % 4) + "\nAnswer:" for i in range(10)]
    kw = dict(n=2, temperature=1.0, max_new_tokens=6)
    out = sampler.generate(prompts, seed=3, **kw)
    chunks: dict[int, dict[int, str]] = {}
    for prompt, group in zip(prompts, out):
        assert [parse_sample_key(str(c.sample_key))[2:] for c in group] == [(0, 2), (1, 2)]
        assert len({c.sampler_seed for c in group}) == 1
        for c in group:
            _check_ids(c, tokenizer, prompt)
            j, n_prompts, _, _ = parse_sample_key(str(c.sample_key))
            chunks.setdefault(int(c.sampler_seed or 0), {})[j] = prompt
    assert len(chunks) == 3 and sorted(len(c) for c in chunks.values()) == [2, 4, 4]  # 10 prompts, 4 a chunk
    for seed, members in chunks.items():
        again = sampler.resample([members[j] for j in range(len(members))], seed, **kw)
        for j, prompt in members.items():
            group = out[prompts.index(prompt)]
            assert [(c.text, c.token_ids) for c in again[j]] == [(c.text, c.token_ids) for c in group]
    greedy = sampler.generate(prompts[:3], n=3, temperature=0.0, max_new_tokens=6, seed=3)
    assert all(len(g) == 3 and len(set(g)) == 1 and g[0].sample_key.endswith("sample 0 of 1") for g in greedy)


def test_vllm_completions_carry_their_request_seed_and_one_prompt_resamples_alone(tokenizer, monkeypatch):
    """The vLLM sampler's bookkeeping against a stand-in engine that samples as vLLM's does with a seed (child
    request d of n seeded seed + d): each prompt its own request seed, sample d its key, and `resample` of one
    prompt with its seed gives its samples whatever the original call held."""
    import random
    import sys
    import types

    from models.sampling.vllm import VLLMSampler

    class Params:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class Engine:
        def generate(self, prompts, params, lora_request=None, use_tqdm=False):
            return [
                types.SimpleNamespace(outputs=[self._one(p, sp, d) for d in range(sp.n)])
                for p, sp in zip(prompts, params)
            ]

        @staticmethod
        def _one(prompt, sp, d):
            rng = random.Random(f"{prompt['prompt_token_ids']}:{sp.seed + d}")
            ids = [rng.randrange(2, 60) for _ in range(rng.randrange(1, sp.max_tokens))] + [1]
            text = tokenizer.decode(ids, skip_special_tokens=True)
            return types.SimpleNamespace(text=text, token_ids=ids, finish_reason="stop", index=d)

    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = Params  # type: ignore[attr-defined]
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    sampler = VLLMSampler.__new__(VLLMSampler)
    sampler.llm, sampler.tokenizer, sampler._lora = Engine(), tokenizer, None
    prompts = [f"Question: What is {i} + 4?\nAnswer:" for i in range(6)]
    kw = dict(n=3, temperature=1.0, max_new_tokens=8)
    out = sampler.generate(prompts, seed=11, **kw)
    assert len({c.sampler_seed for g in out for c in g}) == 6  # a seed per request
    target = out[4][2]
    assert target.sample_key == "request 4 sample 2 of 3"
    _check_ids(target, tokenizer, prompts[4])
    [again] = sampler.resample([prompts[4]], int(target.sampler_seed or 0), **kw)
    assert [(c.text, c.token_ids, c.sampler_seed) for c in again] == [
        (c.text, c.token_ids, c.sampler_seed) for c in out[4]
    ]
    assert again[2].sample_key == "request 0 sample 2 of 3"  # this call's index


def test_resample_attempt_repeats_the_draw_on_the_recorded_weights_only(pidistill_home: Path, monkeypatch):
    """resample_attempt with a stand-in sampler: it is asked for the attempt's backend and model, refuses
    other weights, repeats the draw (its prompts, seed, n, the stage's settings) and returns the attempt's
    place in it."""
    import models.sampling
    from tasks.resample import resample_attempt

    _runs_row(pidistill_home, "r")
    rows = [
        _drawn("retry", 2 * j + d, f"chunk 1 prompt {j} of 2 sample {d} of 2", 9, f"P{j}", sampler="hf",
               policy_digest="w1", prompt_token_sha=token_sha([j]), temperature=0.7)
        for j in range(2)
        for d in range(2)
    ]  # fmt: skip
    write_rows(shard_path(pidistill_home, "r", "attempts", "a", 0, 1, "train"), rows, "attempts")
    calls: list = []

    class StandIn:
        name, model_ref, tokenizer, policy_digest = "hf", "m", None, "w1"

        def resample(self, prompts, sampler_seed, **kw):
            calls.append((list(prompts), sampler_seed, kw))
            return [[Completion(f"{p}.{d}", 1, 1, "stop", prompt_token_sha=token_sha([j])) for d in range(2)]
                    for j, p in enumerate(prompts)]  # fmt: skip

    stand_in = StandIn()
    monkeypatch.setattr(models.sampling, "get_sampler", lambda backend, ref, *a, **k: stand_in)
    row, again = resample_attempt("retry-3")  # prompt 1, sample 1
    assert (row["attempt_id"], again.text) == ("retry-3", "P1.1")
    [(prompts, seed, kw)] = calls
    assert (prompts, seed, kw["n"], kw["temperature"], kw["stop"]) == (["P0", "P1"], 9, 2, 0.7, ("\n",))
    stand_in.policy_digest = "w2"  # the checkpoint was overwritten since
    with pytest.raises(NotResamplable, match="now holds weights w2"):
        resample_attempt("retry-3")
