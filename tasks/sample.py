"""Stage `sample`: draw completions for a batch of prompts, one task run per stage.

A request is one prompt to sample (a first try, or a retry with privileged
information); its result rows are attempts without a verdict yet:

    SampleRequest(problem=p, prompt="Question: What is 8 * 8 + 67?\\nAnswer:", attempt_idx=0)
    -> {"problem_id": "arith-7b0e13a0", "attempt_idx": 0, "sample_idx": 2, "completion": " 8*8=64. ...", ...}
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from domains import PrivilegedInfo, Problem
from experiments.config import ExperimentConfig
from models.sampling.base import Sampler
from tasks.common import RoundKey, attempt_id, derive_seed, domain_of, now


@dataclass(frozen=True)
class SampleRequest:
    problem: Problem
    prompt: str
    attempt_idx: int = 0
    parent_id: str | None = None
    pi: PrivilegedInfo | None = None


def first_requests(cfg: ExperimentConfig, problems: list[Problem]) -> list[SampleRequest]:
    domain = domain_of(cfg)
    return [SampleRequest(problem=p, prompt=domain.prompt(p)) for p in problems]


def make_sampler(cfg: ExperimentConfig, model_ref: str) -> Sampler:
    """The configured sampling backend over `model_ref`."""
    backend = cfg.sampling.backend
    if backend in ("vllm", "auto"):
        raise NotImplementedError(
            f"sampling.backend={backend!r}: the vLLM backend is not built yet; use sampling.backend=hf"
        )
    from models.sampling.hf import HFSampler

    return HFSampler(model_ref, device=cfg.model.device, dtype=cfg.model.dtype, batch_size=cfg.sampling.batch_size)


def draw(
    sampler: Sampler,
    key: RoundKey,
    requests: list[SampleRequest],
    *,
    phase: str,
    seed: int,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    stop: tuple[str, ...],
) -> list[dict]:
    """Sample `n` completions per request; returns attempt rows (verdict columns still empty)."""
    outs = sampler.generate(
        [r.prompt for r in requests],
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        stop=stop,
        seed=seed,
    )
    rows, created = [], now()
    for req, completions in zip(requests, outs):
        for s, c in enumerate(completions):
            rows.append(
                {
                    **key.columns(),
                    "phase": phase,
                    "problem_id": req.problem.problem_id,
                    "attempt_id": attempt_id(*key.columns().values(), phase, req.problem.problem_id, req.attempt_idx, s, req.parent_id),
                    "attempt_idx": req.attempt_idx,
                    "sample_idx": s,
                    "parent_id": req.parent_id,
                    "model_ref": sampler.model_ref,
                    "sampler": sampler.name,
                    "temperature": float(temperature),
                    "pi_kind": req.pi.kind if req.pi else None,
                    "pi_text": req.pi.text if req.pi else None,
                    "prompt": req.prompt,
                    "completion": c.text,
                    "n_prompt_tokens": c.n_prompt_tokens,
                    "n_completion_tokens": c.n_completion_tokens,
                    "created_at": created,
                }
            )
    return rows


@task(name="sample", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def sample(cfg: ExperimentConfig, key: RoundKey, model_ref: str, requests: list[SampleRequest]) -> list[dict]:
    """Training-phase sampling: `sampling.n` completions per request."""
    sampler = make_sampler(cfg, model_ref)
    try:
        s = cfg.sampling
        # The seed leaves out run_id and arm: same config + seed => same completions,
        # and arms that share a model at a round share random numbers (a paired design).
        seed = derive_seed(key.seed, key.round, "train", *sorted({r.attempt_idx for r in requests}))
        return draw(
            sampler, key, requests, phase="train", seed=seed, n=s.n, temperature=s.temperature, top_p=s.top_p,
            max_new_tokens=s.max_new_tokens, stop=domain_of(cfg).stop,
        )
    finally:
        sampler.close()
