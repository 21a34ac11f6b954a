"""Prompt tokens are the same for sampling and training (issue 16): a tokenizer that adds a BOS (Llama,
DeepSeek-Prover) gets it when sampling too, and a mismatch fails the round before training."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import processors
from transformers import AutoTokenizer

from models.prompts import PromptParityError, check_prompt_parity, prompt_ids

pytestmark = pytest.mark.slow  # the tiny model's tokenizer


def _bos_tokenizer(tiny_model: Path):
    """The tiny tokenizer with a Llama-style post-processor: BOS (here <eos>'s id) before every text."""
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<eos> $A", special_tokens=[("<eos>", tok.eos_token_id)]
    )
    return tok


def test_a_bos_tokenizer_gets_its_bos_when_sampling_as_when_training(tiny_model: Path):
    tok = _bos_tokenizer(tiny_model)
    prompt, completion = "Question: What is 2 + 3?\nAnswer:", " 2+3=5. #### 5"
    ids = prompt_ids(tok, prompt)
    assert ids[0] == tok.eos_token_id  # the BOS the trainer puts there
    trained = tok(text=prompt + completion)["input_ids"]  # what TRL's SFTTrainer tokenizes
    assert trained[: len(ids)] == ids
    check_prompt_parity(tok, [{"prompt": prompt, "completion": completion}])
    # the old sampler encoding (no special tokens) is exactly what the check exists to catch
    old = tok(prompt, add_special_tokens=False)["input_ids"]
    assert trained[: len(old)] != old


def test_a_completion_that_merges_into_the_prompt_is_counted_and_a_drifted_prompt_fails(tiny_model: Path):
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    merged = next(
        (p, c)
        for p, c in [("Answer: fo", "o bar"), ("Answer: th", "e end"), ("Answer: a", "nswer")]
        if tok(p + c)["input_ids"][: len(tok(p)["input_ids"])] != tok(p)["input_ids"]
    )
    clean = {"prompt": "Question: What is 2 + 3?\nAnswer:", "completion": " 2+3=5. #### 5"}
    # one example's own text merging with the prompt's last token: counted (TRL trains from the split)
    assert check_prompt_parity(tok, [{"prompt": merged[0], "completion": merged[1]}, clean]) == 1
    assert check_prompt_parity(tok, [clean]) == 0
    # a prompt the trainer sees otherwise than it was sampled (here: sampled without the tokenizer's BOS)
    with pytest.raises(PromptParityError, match="prompt/training token mismatch at token 1"):
        check_prompt_parity(_bos_tokenizer(tiny_model), [{**clean, "prompt": "<eos>" + clean["prompt"]}])
