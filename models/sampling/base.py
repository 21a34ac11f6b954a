"""The Sampler protocol every generation backend implements (HF now, vLLM later).

    >>> s = HFSampler("runs/models/tiny-1a2b")
    >>> [[c]] = s.generate(["Question: What is 2 + 3?\\nAnswer:"], n=1, temperature=0.0, max_new_tokens=16, seed=0)
    >>> c.text, c.n_completion_tokens
    (' 2+3=5. #### 5', 9)

Contract: one list of `n` completions per prompt, in prompt order; the same
prompts, settings and seed give the same completions; stop strings are cut
off (not included); `temperature == 0` is greedy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Completion:
    text: str
    n_prompt_tokens: int
    n_completion_tokens: int  # tokens generated (compute spent), stop string included
    finish_reason: str  # "stop" (eos or stop string) | "length"


@runtime_checkable
class Sampler(Protocol):
    name: str  # backend name, stored per attempt as `sampler`
    model_ref: str  # what was loaded, stored per attempt as `model_ref`
    tokenizer: Any  # the model's tokenizer: its chat template renders the prompts (models.prompts.render)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        seed: int = 0,
    ) -> list[list[Completion]]: ...

    def close(self) -> None: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; returns (text, whether one was found)."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
