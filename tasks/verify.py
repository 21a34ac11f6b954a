"""Stage `verify`: judge each attempt with its domain's checker.

Each attempt comes back as a copy with its verdict (`Attempt.with_verdict`: the
`status`, `passed`, `score` and `feedback` columns) and, when its own prompt carried
privileged information, whether it copies it (`copies_pi`, `pi_overlap`: domains.pi_copy). A
completion seen before for the same problem is not checked again (the
cache key is (problem_id, completion)). When more than
`verify.max_error_rate` of the verdicts are verifier errors the round fails
loudly: a broken checker must never pass for a model that got worse.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from domains import Domain, PrivilegedInfo, Problem, Verdict
from domains.errors import NotRetryable
from domains.pi_copy import pi_copy
from domains.thinking import check_answers
from experiments.config import ExperimentConfig
from storage.schema import Attempt
from tasks.domain import domain_of
from tasks.keys import RoundKey
from tasks.metering import metered


class VerifierErrorRate(NotRetryable, RuntimeError):
    """Too many verifier errors in one stage."""


def verify_rows(
    cfg: ExperimentConfig,
    problems: dict[str, Problem],
    attempts: list[Attempt],
    counters: dict | None = None,
    check: bool = True,
    rewards: bool = True,
) -> list[Attempt]:
    """The attempts with their verdicts; raises VerifierErrorRate past the threshold (unless not `check`).
    `rewards`: verdicts that decide training data (hidden tests on); False for the held-out evaluation."""
    domain = domain_of(cfg, rewards=rewards)
    unique: dict[tuple[str, str], int] = {}
    for a in attempts:
        unique.setdefault((a.problem_id, a.completion), len(unique))
    keys = list(unique)
    verdicts: list[Verdict] = check_answers(domain, [problems[p] for p, _ in keys], [c for _, c in keys])
    if counters is not None:
        counters["n_items"] += len(attempts)
        counters["verifier_calls"] += len(keys)
    out = [
        with_pi_copy(domain, problems[a.problem_id], a.with_verdict(verdicts[unique[(a.problem_id, a.completion)]]))
        for a in attempts
    ]
    if check:
        check_error_rate(cfg, out)
    return out


def with_pi_copy(domain: Domain, problem: Problem, attempt: Attempt) -> Attempt:
    """`attempt` with `copies_pi` and `pi_overlap` filled when its prompt carried PI. An OPSD rollout's PI
    is its teacher's (the student never saw it): left NULL, as for an attempt without PI."""
    if attempt.pi_kind is None or attempt.phase == "opsd":
        return attempt
    found = pi_copy(domain, problem, PrivilegedInfo(attempt.pi_kind, attempt.pi_text or ""), attempt.completion)
    return attempt.with_pi_copy(found.copies, found.overlap)


def check_error_rate(cfg: ExperimentConfig, attempts: list[Attempt]) -> None:
    errors = [a for a in attempts if a.status == "error"]
    if attempts and len(errors) / len(attempts) > cfg.verify.max_error_rate:
        raise VerifierErrorRate(
            f"{len(errors)} of {len(attempts)} verdicts are verifier errors "
            f"(more than verify.max_error_rate={cfg.verify.max_error_rate}); first: {errors[0].feedback}"
        )


@task(name="verify", retries=0, cache_policy=NO_CACHE)
def verify(
    cfg: ExperimentConfig,
    key: RoundKey,
    problems: dict[str, Problem],
    attempts: list[Attempt],
    shard: int | None = None,
) -> list[Attempt]:
    level = attempts[0].attempt_idx if attempts else 0
    with metered(key, "verify", level, shard=shard) as m:
        # A shard's error rate is checked with the whole stage's (flows.scale), as if unsharded.
        return verify_rows(cfg, problems, attempts, m, check=shard is None)
