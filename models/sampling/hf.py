"""Batched sampling with transformers `generate` (CPU or GPU): the fallback backend.

Prompts are sorted by length and generated in chunks of about `batch_size`
sequences with left padding; each chunk's RNG is seeded from (seed, chunk),
so one config and seed always produce the same completions. `model_ref` may be
a PEFT adapter folder: its base model is loaded with the adapter merged in
(`models.loading.load_model`).

A completion depends on its whole chunk (the one RNG, the padding): it records
the chunk's seed as `sampler_seed` and "chunk c prompt j of P sample d of n" as
`sample_key`, and
`resample(chunk_prompts, sampler_seed, n=...)` runs that chunk again (`base`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.loading import load_model, load_tokenizer, resolve_device
from models.policy import policy_digest
from models.prompts import prompt_ids
from models.sampling.base import Completion, cut_at_stop, token_sha
from storage.ids import hash_int


def _chunk_seed(seed: int, chunk: int) -> int:
    return hash_int(seed, chunk)


class HFSampler:
    name = "hf"
    policy_digest: str | None = None  # models.policy; a model already in memory has none

    def __init__(self, model_ref: str, device: str = "auto", dtype: str = "auto", batch_size: int = 64):
        device = resolve_device(device)
        self._setup(model_ref, load_model(model_ref, device, dtype), load_tokenizer(model_ref), device, batch_size)
        self.policy_digest = policy_digest(model_ref)

    @classmethod
    def from_model(cls, model, tokenizer, model_ref: str = "in-memory", batch_size: int = 64) -> HFSampler:
        """A sampler over a model already in memory (e.g. one being trained): its weights are no file, so no
        `policy_digest`."""
        self = cls.__new__(cls)
        self._setup(model_ref, model, tokenizer, str(model.device), batch_size)
        return self

    def _setup(self, model_ref, model, tokenizer, device, batch_size) -> None:
        self.model_ref, self.model, self.tokenizer = model_ref, model.eval(), tokenizer
        self.device, self.batch_size = device, batch_size
        self.tokenizer.padding_side = "left"

    @torch.inference_mode()
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
    ) -> list[list[Completion]]:
        greedy = temperature == 0
        draws = 1 if greedy else n  # greedy samples are all the same: generate once
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        per_chunk = max(1, self.batch_size // draws)
        out: list[list[Completion]] = [[] for _ in prompts]
        for c, start in enumerate(range(0, len(order), per_chunk)):
            idx = order[start : start + per_chunk]
            chunk = [prompts[i] for i in idx]
            done = self._generate_chunk(chunk, _chunk_seed(seed, c), c, draws, temperature, top_p, max_new_tokens, stop)
            for j, i in enumerate(idx):
                out[i] = done[j * draws : (j + 1) * draws] * (n if greedy else 1)
        return out

    @torch.inference_mode()
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
        """Run one chunk again: `prompts` in the chunk's order (j of its keys), each drawn `n` times (greedy:
        n = 1), torch's RNG seeded with the chunk's `sampler_seed`. The chunk's index is not known here: the
        keys read "chunk ?"."""
        done = self._generate_chunk(list(prompts), sampler_seed, None, n, temperature, top_p, max_new_tokens, stop)
        return [done[j * n : (j + 1) * n] for j in range(len(prompts))]

    def _generate_chunk(
        self, prompts, chunk_seed, chunk, draws, temperature, top_p, max_new_tokens, stop
    ) -> list[Completion]:
        """One `model.generate` call over `prompts` x `draws` rows, torch's RNG seeded with `chunk_seed`."""
        torch.manual_seed(chunk_seed)
        ids = [prompt_ids(self.tokenizer, p) for p in prompts]  # one encoder for every consumer (models.prompts)
        enc = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        sampling = (
            dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
        )
        generated = self.model.generate(
            **enc,
            **sampling,
            max_new_tokens=max_new_tokens,
            num_return_sequences=draws,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            top_k=None,
            **(dict(stop_strings=list(stop), tokenizer=self.tokenizer) if stop else {}),
        )
        given = [(len(p), token_sha(p)) for p in ids]
        where = "?" if chunk is None else chunk
        completions = []
        for r, row in enumerate(generated[:, enc["input_ids"].shape[1] :].tolist()):
            j, d = divmod(r, draws)  # the draws of a prompt are consecutive rows
            key = f"chunk {where} prompt {j} of {len(ids)} sample {d} of {draws}"
            n_prompt, sha = given[j]
            completions.append(self._decode(row, stop, n_prompt, sha, chunk_seed, key))
        return completions

    def _decode(
        self, ids: list[int], stop: Sequence[str], n_prompt_tokens: int, prompt_sha: str, seed: int, key: str
    ) -> Completion:
        # A row ends at eos; rows that stopped early (stop string) are padded after it.
        eos = self.tokenizer.eos_token_id
        ends = {eos, self.tokenizer.pad_token_id}
        end = next((k for k, t in enumerate(ids) if t in ends), None)
        ended = end is not None and ids[end] == eos
        ids = ids if end is None else ids[:end]
        text, stopped = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stop)
        reason = "stop" if ended or stopped else "length"
        generated = tuple(ids) + ((eos,) if ended else ())  # eos counted as generated, as n_completion_tokens
        return Completion(text, n_prompt_tokens, len(generated), reason, generated, prompt_sha, seed, key)

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
