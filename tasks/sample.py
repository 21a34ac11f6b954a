"""Stage `sample`: draw completions for a batch of prompts, one task run per stage and retry level.

A request is one prompt to sample (a first try, or a follow-up of a failed
attempt); its result rows are attempts without a verdict yet:

    SampleRequest(problem=p, prompt="Question: What is 8 * 8 + 67?\\nAnswer:", messages=({"role": "user", ...},))
    -> Attempt(problem_id="arith-7b0e13a0", attempt_idx=0, sample_idx=2, completion=" 8*8=64. ...", ...)

A request states its prompt in both forms (plain text, and messages for a chat model); the sampler's
tokenizer and `model.chat` decide which one the model gets (`models.prompts`), and the attempt stores the
text exactly as the model saw it: for a chat model, the rendered template with its markers.

First tries draw `sampling.n` samples per prompt, follow-ups one (with `retry.shape: fan`, K: the K
try-agains of one failed first try, `sample_idx` 0..K-1). Temperatures:
`retry.temperature` for follow-ups when set, else the round's entry of
`sampling.temperature_schedule`, else `sampling.temperature`. `draw_settings` says it for
every phase, so the stages and a re-sample of one attempt (`tasks.resample`) agree.

Every attempt carries its provenance (models.sampling.base): the prompt's token sha, the
completion's token ids and sha, the sampler seed and the sample's place in that draw, and
the digest of the weights sampled from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from domains import PrivilegedInfo, Problem
from domains.base import Message
from domains.pi import diagnosis_messages, diagnosis_prompt, first_messages
from experiments.config import ExperimentConfig
from models.prompts import PromptStyle, prompt_style, render
from models.sampling import Completion, Sampler, get_sampler
from models.sampling.base import token_sha
from storage.schema import Attempt
from tasks.domain import domain_of
from tasks.failures import retry_on_infrastructure
from tasks.keys import RoundKey, attempt_id, derive_seed
from tasks.metering import count_tokens, metered, now
from tasks.resume import fault_point, resumable
from tasks.shards import stage_threads


@dataclass(frozen=True)
class SampleRequest:
    problem: Problem
    prompt: str  # the plain-text form (base models)
    messages: tuple[Message, ...] = ()  # the conversation form (chat models)
    attempt_idx: int = 0
    parent_id: str | None = None
    pi: PrivilegedInfo | None = None


def first_requests(cfg: ExperimentConfig, problems: Iterable[Problem]) -> list[SampleRequest]:
    domain = domain_of(cfg)
    return [SampleRequest(p, domain.prompt(p), first_messages(domain, p)) for p in problems]


def style_of(cfg: ExperimentConfig, tokenizer) -> PromptStyle:
    """How this config prompts the model of `tokenizer` (chat template or plain text)."""
    return prompt_style(tokenizer, cfg.model.chat, cfg.model.chat_template_kwargs)


def stop_for(cfg: ExperimentConfig, style: PromptStyle) -> tuple[str, ...]:
    """The domain's stop strings for how the model is prompted (a chat model's turn ends at its own token)."""
    domain = domain_of(cfg)
    return domain.chat_stop if style.chat else domain.stop


def make_sampler(cfg: ExperimentConfig, model_ref: str) -> Sampler:
    """The configured sampling backend over `model_ref` (kept loaded across stages)."""
    s = cfg.sampling
    return get_sampler(s.backend, model_ref, cfg.model.device, cfg.model.dtype, s.batch_size, s.engine_options())


def samples_per_request(cfg: ExperimentConfig, attempt_idx: int) -> int:
    """Samples drawn per request at a level: `sampling.n` for first tries; per follow-up request one, or K
    with `retry.shape: fan` (one request per failed first try, its K try-agains drawn at once)."""
    if attempt_idx == 0:
        return cfg.sampling.n
    return cfg.retry.max_retries if cfg.retry.shape == "fan" else 1


def temperature_for(cfg: ExperimentConfig, round: int, attempt_idx: int) -> float:
    if attempt_idx > 0 and cfg.retry.temperature is not None:
        return cfg.retry.temperature
    schedule = cfg.sampling.temperature_schedule
    return schedule[min(round, len(schedule)) - 1] if schedule else cfg.sampling.temperature


@dataclass(frozen=True)
class DrawSettings:
    """How a stage samples: what `Sampler.generate` takes besides the prompts and the seed."""

    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    stop: tuple[str, ...]


def draw_settings(cfg: ExperimentConfig, phase: str, round: int, attempt_idx: int, style: PromptStyle) -> DrawSettings:
    """The sampling settings of a phase's draw at a round and retry level: train (first tries: sampling.n
    each; follow-ups: `samples_per_request`), diagnosis, eval. OPSD rollouts are drawn inside training (train.opsd)."""
    s = cfg.sampling
    if phase == "eval":
        e = cfg.eval
        return DrawSettings(e.n, e.temperature, s.top_p, e.max_new_tokens or s.max_new_tokens, stop_for(cfg, style))
    temperature = temperature_for(cfg, round, attempt_idx)
    if phase == "diagnosis":  # a chat model's diagnosis is its whole turn
        stop = () if style.chat else ("\n\n",)
        return DrawSettings(1, temperature, s.top_p, cfg.retry.diagnosis_max_new_tokens, stop)
    if phase == "train":
        return DrawSettings(
            samples_per_request(cfg, attempt_idx), temperature, s.top_p, s.max_new_tokens, stop_for(cfg, style)
        )
    raise ValueError(f"phase {phase!r} is not drawn by a sampling stage (train, diagnosis, eval)")


def provenance(c: Completion, policy_digest: str | None) -> dict:
    """An attempt's provenance columns: from its completion (NULL where the completion has none) and the
    sampler's `policy_digest`."""
    if c.sampler_seed is None:
        return {"policy_digest": policy_digest}
    return {
        "prompt_token_sha": c.prompt_token_sha,
        "completion_token_ids": c.token_ids,
        "completion_token_sha": token_sha(c.token_ids),
        "sampler_seed": c.sampler_seed,
        "sample_key": c.sample_key,
        "policy_digest": policy_digest,
    }


def draw(
    sampler: Sampler,
    style: PromptStyle,
    key: RoundKey,
    requests: list[SampleRequest],
    *,
    phase: str,
    seed: int,
    settings: DrawSettings,
) -> list[Attempt]:
    """Sample `settings.n` completions per request, each prompt rendered in `style`; returns attempts
    (verdict and decision still empty) whose `prompt` is the text the model saw."""
    prompts = [render(sampler.tokenizer, style, r.prompt, r.messages) for r in requests]
    outs = sampler.generate(prompts, seed=seed, **asdict(settings))
    fault_point("sample")  # crash tests: killed mid-stage, after sampling, before anything is saved
    rows, created = [], now()
    for req, prompt, completions in zip(requests, prompts, outs):
        for s, c in enumerate(completions):
            rows.append(
                Attempt(
                    **key.columns(),
                    phase=phase,
                    problem_id=req.problem.problem_id,
                    attempt_id=attempt_id(
                        *key.columns().values(), phase, req.problem.problem_id, req.attempt_idx, s, req.parent_id
                    ),
                    attempt_idx=req.attempt_idx,
                    sample_idx=s,
                    parent_id=req.parent_id,
                    model_ref=sampler.model_ref,
                    sampler=sampler.name,
                    temperature=float(settings.temperature),
                    pi_kind=req.pi.kind if req.pi else None,
                    pi_text=req.pi.text if req.pi else None,
                    prompt=prompt,
                    completion=c.text,
                    n_prompt_tokens=c.n_prompt_tokens,
                    n_completion_tokens=c.n_completion_tokens,
                    created_at=created,
                    **provenance(c, sampler.policy_digest),
                )
            )
    return rows


@task(
    name="sample", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_on_infrastructure, cache_policy=NO_CACHE
)
def sample(
    cfg: ExperimentConfig, key: RoundKey, model_ref: str, requests: list[SampleRequest], shard: int | None = None
) -> list[Attempt]:
    """Training-phase sampling of one retry level (all requests share an attempt_idx), or of
    one shard of it (`shard`, see flows.scale: its own seed, stage row and torch thread count)."""
    levels = {r.attempt_idx for r in requests}
    if len(levels) != 1:
        raise ValueError(f"sample: one retry level per call, got attempt_idx {sorted(levels)}")
    (level,) = levels
    of_shard = ("shard", shard) if shard is not None and cfg.scale.shards > 1 else ()  # one shard: the stage's seed
    with metered(key, "sample", level, model_ref, shard) as m, stage_threads(cfg.scale, shard):
        sampler = make_sampler(cfg, model_ref)
        style = style_of(cfg, sampler.tokenizer)
        rows = draw(
            sampler,
            style,
            key,
            requests,
            phase="train",
            # The seed leaves out run_id and arm: same config + seed => same completions,
            # and arms that share a model at a round share random numbers (a paired design).
            seed=derive_seed(key.seed, key.round, "train", level, *of_shard),
            settings=draw_settings(cfg, "train", key.round, level, style),
        )
        count_tokens(m, rows)
    return rows


@task(
    name="diagnose", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_on_infrastructure, cache_policy=NO_CACHE
)
def diagnose(
    cfg: ExperimentConfig,
    key: RoundKey,
    model_ref: str,
    problems: dict[str, Problem],
    failures: list[Attempt],
    attempt_idx: int,
) -> dict[str, str]:
    """self_diagnosis: the model explains each failed attempt; returns {failed attempt_id: diagnosis}.

    The diagnoses are stored as attempts with phase = 'diagnosis' (parent_id = the failed attempt)."""

    domain = domain_of(cfg)
    requests = [
        SampleRequest(
            p := problems[a.problem_id],
            diagnosis_prompt(domain, p, a.completion),
            diagnosis_messages(domain, p, a.completion),
            attempt_idx,
            a.attempt_id,
        )
        for a in failures
    ]
    with metered(key, "diagnose", attempt_idx, model_ref) as m, stage_threads(cfg.scale):
        sampler = make_sampler(cfg, model_ref)
        style = style_of(cfg, sampler.tokenizer)
        rows = draw(
            sampler,
            style,
            key,
            requests,
            phase="diagnosis",
            seed=derive_seed(key.seed, key.round, "diagnosis", attempt_idx),
            settings=draw_settings(cfg, "diagnosis", key.round, attempt_idx, style),
        )
        count_tokens(m, rows)
    key.write("attempts", f"diagnosis-{attempt_idx}", rows)  # no verdict, no decision
    return {a.parent_id: a.completion for a in rows if a.parent_id}  # every diagnosis has its parent


def diagnoses(
    cfg: ExperimentConfig,
    key: RoundKey,
    model_ref: str,
    problems: dict[str, Problem],
    failures: list[Attempt],
    attempt_idx: int,
) -> dict[str, str] | None:
    """With `retry.feedback: self_diagnosis`, the model's diagnosis of each failure before its follow-up
    (the `diagnose` stage, once per run and level); otherwise None."""
    if not (cfg.retry.strategy == "retry" and cfg.retry.feedback == "self_diagnosis"):
        return None
    return resumable(
        key, f"diagnose-{attempt_idx}", diagnose, cfg, key, model_ref, quote(problems), quote(failures), attempt_idx
    )
