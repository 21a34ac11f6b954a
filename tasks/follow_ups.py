"""The try-again loop: which attempts get another try, and what the follow-up prompt is.

A failed first try (not accepted by its verdict) gets K = `retry.max_retries` follow-ups, spent as
`retry.shape` and `retry.budget` say:

    shape: chain, budget: until_pass   up to K levels; each follow-up answers the chain's previous failed
                                       attempt (parent_id), attempt_idx one more; the chain stops at its
                                       first accepted follow-up (the default)
    shape: chain, budget: fixed        exactly K levels: a chain whose follow-up passed goes on from its
                                       last failed attempt, so every failed first try gets K follow-ups
    shape: fan                         K independent follow-ups of the failed first try, drawn at once:
                                       one request sampled K times (attempt_idx 1, sample_idx 0..K-1)

With `retry.strategy: retry` the follow-up prompt carries privileged information of kind
`retry.feedback` (the kinds and what each shows: `domains.pi`; for a chat model, a conversation that
shows the failed attempt as the model's turn where the kind is about it):

    Attempt(attempt_id="a1", completion=" 2*7=15. #### 15", feedback="final answer 15 is wrong", ...)
    -> SampleRequest(problem, "Question: What is 2 * 7?\\nYour previous answer was wrong. ...", 1, "a1", pi)

With `retry.strategy: resample` (the double-sample control) the follow-up is a fresh sample of the
original prompt: no failure signal. The two spend the same budget per failed first try only where
neither can stop early: K = 1, `budget: fixed`, or a fan; with `until_pass` the arm whose follow-ups
pass more often stops sooner (the report's follow-up budget table shows what each arm spent).
A parent's follow-up prompt is one (its PI is seeded by the parent), so a parent asked again, in a
fan or a fixed chain, gets new samples of the same prompt.
("retry" alone means a Prefect task retry after an infrastructure failure.)
"""

from __future__ import annotations

import random

from domains import Problem
from domains.pi import first_messages, follow_up_messages, make_pi
from experiments.config import ExperimentConfig
from storage.schema import Attempt
from tasks.domain import domain_of
from tasks.filter import verdict_reason
from tasks.keys import derive_seed
from tasks.sample import SampleRequest


def failed(cfg: ExperimentConfig, attempts: list[Attempt]) -> list[Attempt]:
    """Attempts whose verdict would not be accepted (the ones that get another try)."""
    return [a for a in attempts if verdict_reason(cfg, a) is not None and a.status != "error"]


def follow_up_levels(cfg: ExperimentConfig) -> range:
    """The retry levels (attempt_idx) of the loop: 1..K for a chain, 1 for a fan (its K drawn at once)."""
    k = cfg.retry.max_retries
    return range(1, (k if cfg.retry.shape == "chain" else min(k, 1)) + 1)


def next_parents(cfg: ExperimentConfig, parents: list[Attempt], latest: list[Attempt]) -> list[Attempt]:
    """What the next level follows up, given this level's `parents` and their follow-ups `latest`: the
    follow-ups that failed (until_pass), or for every chain its last failed attempt (fixed: a follow-up
    that passed, or was a verifier error, leaves its parent to be followed up again)."""
    if cfg.retry.budget == "until_pass":
        return failed(cfg, latest)
    still_failing = {a.parent_id: a for a in failed(cfg, latest)}
    return [still_failing.get(p.attempt_id, p) for p in parents]


def follow_ups(
    cfg: ExperimentConfig,
    seed: int,
    round: int,
    problems: dict[str, Problem],
    failures: list[Attempt],
    attempt_idx: int,
    diagnoses: dict[str, str] | None = None,
) -> list[SampleRequest]:
    """One request per failed attempt: a retry with PI, or (resample) the original prompt again."""
    domain = domain_of(cfg)
    pool = list(problems.values())
    out = []
    for failure in failures:
        problem = problems[failure.problem_id]
        if cfg.retry.strategy == "resample":
            out.append(
                SampleRequest(
                    problem, domain.prompt(problem), first_messages(domain, problem), attempt_idx, failure.attempt_id
                )
            )
            continue
        rng = random.Random(derive_seed(seed, round, "pi", failure.attempt_id))
        pi = make_pi(
            cfg.retry.feedback,
            domain,
            problem,
            pool,
            rng,
            completion=failure.completion,
            feedback=failure.feedback,
            diagnosis=(diagnoses or {}).get(failure.attempt_id),
        )
        messages = follow_up_messages(domain, problem, pi, failure.completion)
        out.append(SampleRequest(problem, domain.prompt(problem, pi), messages, attempt_idx, failure.attempt_id, pi))
    return out
