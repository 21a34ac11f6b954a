"""The tiny model's build: killed part-way, it resumes from its last check and ends with the weights of a build
that never stopped; it says where it is; builds in processes with other thread settings give the same weights.
A micro recipe (one layer, 30 steps) keeps this to seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from domains.base import file_sha256
from experiments.config import TinyModelConfig
from models import tiny
from models.numerics import has_avx2

pytestmark = pytest.mark.slow

MICRO = TinyModelConfig(
    vocab_size=96,
    hidden_size=32,
    layers=1,
    heads=1,
    max_steps=30,
    batch_size=8,
    eval_every=10,
    target_low=0.0,
    stop_at=1.0,  # never reached: runs all 30 steps
    target_high=1.0,
)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_a_killed_build_resumes_and_ends_where_an_unbroken_one_does(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIDISTILL_MODEL_CACHE", str(tmp_path / "unbroken"))
    unbroken = tiny.ensure_tiny_model(MICRO)
    out = capsys.readouterr().out
    assert "step    10 of at most 30" in out and "s/step" in out and "(stops at 1.0)" in out

    monkeypatch.setenv("PIDISTILL_MODEL_CACHE", str(tmp_path / "killed"))
    monkeypatch.setenv("PIDISTILL_FAULT_KILL_AT", "tiny-check#2")  # the build's process SIGKILLed at step 20
    with pytest.raises(tiny.TinyModelError, match="exited with status -9"):
        tiny.ensure_tiny_model(MICRO)
    final = tiny.tiny_model_dir(MICRO)
    assert not final.exists() and (tiny.partial_dir(final) / "state.pt").is_file()
    monkeypatch.delenv("PIDISTILL_FAULT_KILL_AT")
    resumed = tiny.ensure_tiny_model(MICRO)
    assert "resuming at step 20" in capsys.readouterr().out
    assert not tiny.partial_dir(final).exists()  # a finished build leaves no checkpoint behind

    a, b = _weights(unbroken), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads((f / "pretrain.json").read_text())["history"] for f in (unbroken, resumed)]
    assert history[0] == history[1] and [h["step"] for h in history[0]] == [10, 20, 30]


def test_builds_with_other_thread_settings_give_the_same_weights(tmp_path, monkeypatch):
    """Each build is its own process with the CPU numerics pinned (models/numerics.py); 1 or 2 threads, and this
    process's own settings, change nothing: one digest, recorded in pretrain.json."""
    digests = []
    for threads in ("1", "2"):
        monkeypatch.setenv("PIDISTILL_MODEL_CACHE", str(tmp_path / f"threads-{threads}"))
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        built = tiny.ensure_tiny_model(MICRO)
        info = json.loads((built / "pretrain.json").read_text())
        assert info["weights_sha256"] == file_sha256(built / "model.safetensors")
        digests.append(info["weights_sha256"])
    assert digests[0] == digests[1]
    if has_avx2():
        assert info["cpu_numerics"] == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


def test_the_build_selects_on_problems_of_its_own():
    """The build stops on pass@1 over problems no experiment evaluates on and it never pretrained on."""
    from domains.arith import ArithDomain

    _, _, pretrained_on = tiny._texts(ArithDomain(seed=tiny.PRETRAIN_SEED_OFFSET), 20_000)
    chosen = tiny.selection_problems(TinyModelConfig(), pretrained_on)
    evaluated = {p.question for p in ArithDomain().load("test", limit=2000)}
    assert len(chosen) == tiny.EVAL_PROBLEMS == len({p.question for p in chosen})
    assert not {p.question for p in chosen} & (evaluated | pretrained_on)
