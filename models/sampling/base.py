"""The Sampler protocol every generation backend implements (HF now, vLLM later).

    >>> s = HFSampler("runs/models/tiny-1a2b")
    >>> [[c]] = s.generate(["Question: What is 2 + 3?\\nAnswer:"], n=1, temperature=0.0, max_new_tokens=16, seed=0)
    >>> c.text, c.n_completion_tokens
    (' 2+3=5. #### 5', 9)

Contract: one list of `n` completions per prompt, in prompt order; the same
prompts, settings and seed give the same completions; stop strings are cut
off (not included); `temperature == 0` is greedy.

Provenance: every completion carries the token ids it was generated as, the sha of
the prompt's ids as fed, and the seed that determined it with its place in that
seed's draw (`sampler_seed`, `sample_key`); a sampler carries the digest of the
weights it loaded (`policy_digest`, models.policy). `resample(prompts, sampler_seed)`
repeats one draw, which is a different unit per backend:

- vLLM seeds every request: `sampler_seed` is the prompt's own request seed,
  `sample_key` "request i sample d of n". `resample([prompt], sampler_seed, n=n)`
  gives that prompt's n samples again, sample d among them, whatever else was
  in the original call.
- HF seeds torch's one RNG per chunk of prompts (one `model.generate` call):
  `sampler_seed` is the chunk's seed, `sample_key` "chunk c prompt j of P
  sample d of n". One sample depends on its whole chunk: `resample(chunk_prompts,
  sampler_seed, n=n)`, the chunk's P prompts in order j (the attempts sharing
  the `sampler_seed`), gives every sample of the chunk again.

Exact on the same hardware, software and (CPU) torch thread count: a GPU's
kernels can change logits in the last bits with the batch around a prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from storage.ids import hash_hex


@dataclass(frozen=True)
class Completion:
    text: str
    n_prompt_tokens: int
    n_completion_tokens: int  # tokens generated (compute spent), stop string included
    finish_reason: str  # "stop" (eos or stop string) | "length"
    # Provenance (see the module docstring): what was generated, from what, under which seed.
    token_ids: tuple[int, ...] = ()  # the generated ids, n_completion_tokens of them (eos, stop string included)
    prompt_token_sha: str | None = None  # token_sha of the prompt's ids as the model was fed them
    sampler_seed: int | None = None  # the seed that determined it: vLLM the request's, HF the chunk's
    sample_key: str | None = None  # its place in that draw: "request i sample d of n" (vLLM), "chunk c ..." (HF)


@runtime_checkable
class Sampler(Protocol):
    name: str  # backend name, stored per attempt as `sampler`
    model_ref: str  # what was loaded, stored per attempt as `model_ref`
    tokenizer: Any  # the model's tokenizer: its chat template renders the prompts (models.prompts.render)
    policy_digest: str | None  # the weights loaded (models.policy), stored per attempt; None: not known

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

    def resample(
        self,
        prompts: Sequence[str],
        sampler_seed: int,
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
    ) -> list[list[Completion]]:
        """Repeat the draw that recorded `sampler_seed` (module docstring): vLLM, each prompt with that
        request seed; HF, `prompts` as one chunk seeded with it."""
        ...

    def close(self) -> None: ...


def token_sha(ids: Sequence[int]) -> str:
    """16 hex digits of sha256 over the ids joined with ':' (storage.ids.hash_hex), so SQL can recompute it:
    left(sha256(array_to_string(completion_token_ids, ':')), 16)."""
    return hash_hex(*ids, n=16)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; returns (text, whether one was found)."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
