"""The tiny model's build: killed part-way, it resumes from its last check and ends with the weights of a build
that never stopped; it says where it is. A micro recipe (one layer, 30 steps) keeps this to seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from experiments.config import TinyModelConfig
from models import tiny

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
    real_check = tiny.greedy_pass_at_1
    calls = []

    def killed_at_the_second_check(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C or a kill between checks leaves: the step-10 checkpoint
        return real_check(*args, **kwargs)

    monkeypatch.setattr(tiny, "greedy_pass_at_1", killed_at_the_second_check)
    with pytest.raises(KeyboardInterrupt):
        tiny.ensure_tiny_model(MICRO)
    final = tiny.tiny_model_dir(MICRO)
    assert not final.exists() and (tiny.partial_dir(final) / "state.pt").is_file()
    monkeypatch.setattr(tiny, "greedy_pass_at_1", real_check)
    resumed = tiny.ensure_tiny_model(MICRO)
    assert "resuming at step 10" in capsys.readouterr().out
    assert not tiny.partial_dir(final).exists()  # a finished build leaves no checkpoint behind

    a, b = _weights(unbroken), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads((f / "pretrain.json").read_text())["history"] for f in (unbroken, resumed)]
    assert history[0] == history[1] and [h["step"] for h in history[0]] == [10, 20, 30]
