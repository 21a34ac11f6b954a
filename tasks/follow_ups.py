"""The try-again loop: which attempts get another try, and what the follow-up prompt is.

A failed attempt (not accepted by its verdict) gets one follow-up request per
loop step, up to `retry.max_retries` (K) steps; the follow-up's `parent_id` is
the failed attempt, its `attempt_idx` one more. With `retry.strategy: retry`
the follow-up prompt carries privileged information of kind `retry.feedback`
(the kinds and what each shows: `domains.pi`; for a chat model, a conversation
that shows the failed attempt as the model's turn where the kind is about it):

    Attempt(attempt_id="a1", completion=" 2*7=15. #### 15", feedback="final answer 15 is wrong", ...)
    -> SampleRequest(problem, "Question: What is 2 * 7?\\nYour previous answer was wrong. ...", 1, "a1", pi)

With `retry.strategy: resample` (the double-sample control) the follow-up is
a fresh sample of the original prompt: the same budget, no failure signal.
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
