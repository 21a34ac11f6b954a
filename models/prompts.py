"""How a prompt becomes text and tokens, in one place: sampling (HF and vLLM), OPSD and SFT must give a model
the same context for the same prompt, or it is trained on one context and sampled in another.

A domain states every prompt twice (`domains.pi`): as plain text for a base model to continue, and as
messages for a chat model. `PromptStyle` says which one a model gets: `model.chat` auto (the tokenizer has
a chat template), on or off, and `model.chat_template_kwargs` (Qwen3: `{enable_thinking: false}`).

    >>> style = prompt_style(tokenizer, "auto", {})          # SmolLM2-Instruct: chat=True
    >>> render(tokenizer, style, "Question: 2+3?\\nAnswer:", [{"role": "user", "content": "2+3?"}])
    '<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n2+3?<|im_end|>\\n<|im_start|>assistant\\n'
    >>> prompt_ids(tokenizer, that_text)                      # what every consumer feeds the model

What is stored as `attempts.prompt` is the rendered text. Tokens: a plain prompt is tokenized with the
tokenizer's own special tokens (a Llama tokenizer's BOS), as TRL tokenizes a text example; a rendered chat
prompt already holds the template's special tokens and gets none added, as `apply_chat_template` and
TRL's conversational examples do. The rule needs no flag: a prompt that begins with a special token was
rendered by a template. The parity check (before every SFT) fails a round when the trainer would see
other tokens for a prompt than the sampler gave the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from domains.errors import NotRetryable
from experiments.config import ConfigError


class PromptParityError(NotRetryable, RuntimeError):
    """The trainer would see other tokens for a prompt than the sampler gave the model."""


@dataclass(frozen=True)
class PromptStyle:
    """How one model is prompted: through its chat template (with `template_kwargs`) or as plain text."""

    chat: bool
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)


def prompt_style(tokenizer, chat: str = "auto", template_kwargs: Mapping[str, Any] | None = None) -> PromptStyle:
    """`model.chat` resolved for this tokenizer: auto = chat when it has a template (the template kwargs then
    apply, or are unused for a base model). ConfigError for `on` without a template, or for `off` with
    template kwargs (a config that contradicts itself)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat not in ("auto", "on", "off"):
        raise ConfigError(f"model.chat={chat!r}: expected auto, on or off")
    if chat == "on" and not has_template:
        raise ConfigError(
            f"model.chat=on but the tokenizer of {tokenizer.name_or_path!r} has no chat template: it is a base "
            "model (set model.chat=off or auto)"
        )
    on = has_template if chat == "auto" else chat == "on"
    if template_kwargs and chat == "off":
        raise ConfigError(
            f"model.chat_template_kwargs={dict(template_kwargs)} but {tokenizer.name_or_path!r} is prompted as "
            "plain text (model.chat=off): remove them or turn chat on"
        )
    return PromptStyle(on, dict(template_kwargs or {}) if on else {})


def render(tokenizer, style: PromptStyle, text: str, messages: Sequence[Mapping[str, str]]) -> str:
    """The exact text the model is given: `messages` through the chat template (ending in the assistant
    header), or the plain `text`."""
    if not style.chat:
        return text
    if not messages:
        raise ValueError("a chat model needs the prompt as messages; this request has none")
    return tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True, **style.template_kwargs
    )


def _rendered(tokenizer, prompt: str) -> bool:
    """Whether `prompt` begins with a special token (the mark of a chat template's output)."""
    return any(t and prompt.startswith(t) for t in tokenizer.all_special_tokens)


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The token ids the model is given for `prompt` (see the module docstring for special tokens)."""
    return list(tokenizer(prompt, add_special_tokens=not _rendered(tokenizer, prompt))["input_ids"])


def _trainer_ids(tokenizer, example: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    """The tokens TRL's SFTTrainer builds for an example: (prompt, prompt + completion), as it calls them."""
    if "messages" in example:  # conversational: the template renders both, with the example's kwargs
        kwargs = dict(example.get("chat_template_kwargs") or {})
        prompt = list(example["messages"])
        both = prompt + [{"role": "assistant", "content": example["completion"]}]
        alone = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, **kwargs)
        whole = tokenizer.apply_chat_template(both, tokenize=True, **kwargs)
        return list(alone["input_ids"]), list(whole["input_ids"])
    alone = tokenizer(text=example["prompt"])["input_ids"]
    return list(alone), list(tokenizer(text=example["prompt"] + example["completion"])["input_ids"])


def check_prompt_parity(tokenizer, examples: Sequence[Mapping[str, Any]], n: int = 16) -> int:
    """Raise PromptParityError unless, for the first `n` examples, the tokens the trainer sees for the prompt
    are exactly the prompt's tokens as sampled (`prompt_ids` of the stored, rendered prompt), alone and in
    front of the completion. A conversational example (with `messages`) is rendered by the template as TRL
    renders it, with its `chat_template_kwargs`.

    One exception is counted, not raised: a completion whose first characters merge with the prompt's last
    token (a chat turn that starts with a newline after the template's "assistant\n"). That is one
    example's text, not a drifted template; TRL trains it from where the two tokenizations part. Returns
    how many of the checked examples merged so."""
    merged = 0
    for e in examples[:n]:
        sampled = prompt_ids(tokenizer, e["prompt"])
        alone, trained = _trainer_ids(tokenizer, e)
        if alone != sampled:
            _mismatch(tokenizer, e, sampled, alone, "the trainer's prompt")
        if trained[: len(sampled)] != sampled:
            at = _first_difference(sampled, trained)
            if not tokenizer.decode(trained[at:]).startswith(tokenizer.decode(sampled[at:])):
                _mismatch(tokenizer, e, sampled, trained, "the trainer's prompt+completion")
            merged += 1  # the same text, split otherwise where the completion begins
    return merged


def _first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _mismatch(tokenizer, example: Mapping[str, Any], sampled: list[int], seen: list[int], what: str) -> None:
    at = _first_difference(sampled, seen)
    raise PromptParityError(
        f"prompt/training token mismatch at token {at} of {example['prompt'][:60]!r}...: the sampler gives "
        f"{tokenizer.decode(sampled[at : at + 5])!r}, {what} has {tokenizer.decode(seen[at : at + 5])!r} "
        "(a chat template that renders the prompt differently with its answer or other kwargs, or special "
        "tokens added on one side only)"
    )
