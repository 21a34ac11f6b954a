"""How a prompt becomes tokens, in one place: sampling (HF and vLLM), OPSD and SFT must give a model the same
context for the same prompt, or it is trained on one context and sampled in another.

    >>> prompt_ids(tokenizer, "Question: What is 2 + 3?\\nAnswer:")     # a Llama tokenizer: [BOS, ...]

TRL's SFTTrainer tokenizes a prompt/completion example with the tokenizer's own special tokens (a Llama
tokenizer's BOS, as DeepSeek-Prover's); the samplers used to leave them out (`add_special_tokens=False`),
so such a model was trained after a BOS and sampled without one. Every consumer now encodes with
`ADD_SPECIAL_TOKENS`, and `check_prompt_parity` (run before every SFT) fails the round when the tokens
the trainer sees for a prompt are not the tokens the sampler gave the model.
"""

from __future__ import annotations

from collections.abc import Sequence

from domains.errors import NotRetryable

ADD_SPECIAL_TOKENS = True  # as TRL tokenizes a prompt (and as vLLM does a text prompt)


class PromptParityError(NotRetryable, RuntimeError):
    """The trainer would see other tokens for a prompt than the sampler gave the model."""


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The token ids the model is given for `prompt`."""
    return list(tokenizer(prompt, add_special_tokens=ADD_SPECIAL_TOKENS)["input_ids"])


def check_prompt_parity(tokenizer, examples: Sequence[dict[str, str]], n: int = 16) -> None:
    """Raise PromptParityError unless, for the first `n` examples, the tokens the trainer sees before the
    completion (TRL: the tokenized prompt+completion, as far as it agrees with the tokenized prompt) are
    exactly the prompt's tokens as sampled."""
    for e in examples[:n]:
        sampled = prompt_ids(tokenizer, e["prompt"])
        trained = list(tokenizer(text=e["prompt"] + e["completion"])["input_ids"])  # TRL's own call
        if trained[: len(sampled)] != sampled:
            at = next((i for i, (a, b) in enumerate(zip(sampled, trained)) if a != b), min(len(sampled), len(trained)))
            raise PromptParityError(
                f"prompt/training token mismatch at token {at} of {e['prompt'][:60]!r}...: the sampler gives "
                f"{tokenizer.decode(sampled[at : at + 5])!r}, the trainer sees {tokenizer.decode(trained[at : at + 5])!r} "
                "(a completion that merges with the prompt's last token, or special tokens added on one side only)"
            )
