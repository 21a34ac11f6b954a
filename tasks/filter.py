"""Stage `filter`: decide which verified attempts become training examples.

Every attempt gets `accepted` and, when rejected, a `reject_reason`:

    failed | no_answer | unclosed_think | timeout | verifier_error | below_threshold      (the verdict)
    copies_pi                                              (copies its prompt's PI: attempts.copies_pi)
    frontier_too_hard | frontier_too_easy                  (problem pass rate outside the bounds)
    duplicate | max_per_problem                            (dedupe and caps, per problem)

A problem's pass rate counts its first tries (`filter.frontier_pass_rate_from: first_tries`): the
model's own rate. A follow-up is drawn only after a failure and a retry sees PI, so counting them
(`all_attempts`) would keep exactly the problems only retries solved as if the model half-solved them.

An accepted attempt trains on the problem's *original* prompt (no privileged
information, no retry scaffold) -> its completion; the stored prompt is rendered
as the trained model is prompted (its chat template, or plain text), so it is
the first try's prompt exactly. `assert_no_pi` checks every example against every
attempt's PI, in every form it took in a prompt, and fails the round if one leaked.
"""

from __future__ import annotations

from collections import defaultdict

from prefect import task
from prefect.cache_policies import NO_CACHE

from domains import PrivilegedInfo, Problem
from domains.errors import NotRetryable
from domains.pi import first_messages, pi_blocks
from experiments.config import ExperimentConfig
from storage.schema import Attempt
from tasks.domain import domain_of
from tasks.keys import RoundKey
from tasks.metering import metered

_VERDICT_REASON = {"fail": "failed", "timeout": "timeout", "error": "verifier_error"}


class PILeak(NotRetryable, RuntimeError):
    """A training prompt carries privileged information."""


def verdict_reason(cfg: ExperimentConfig, attempt: Attempt) -> str | None:
    if attempt.status in ("error", "timeout"):
        return _VERDICT_REASON[attempt.status]
    if attempt.fail_reason in ("no_answer", "unclosed_think"):  # no answer at all: apart from wrong answers
        return attempt.fail_reason
    if cfg.verify.mode == "graded":
        return None if (attempt.score or 0.0) >= cfg.verify.threshold else "below_threshold"
    return None if attempt.passed else "failed"


def _frontier_reason(cfg: ExperimentConfig, pass_rate: float) -> str | None:
    f = cfg.filter
    if not f.frontier:
        return None
    if pass_rate <= f.frontier_low:
        return "frontier_too_hard"
    if pass_rate >= f.frontier_high:
        return "frontier_too_easy"
    return None


def pass_rate(attempts: list[Attempt], counted: str = "first_tries") -> float:
    """The share of one problem's `attempts` that passed: of its first tries (`first_tries`), or of every
    attempt, follow-ups included (`all_attempts`). 0.0 when there is none to count."""
    pool = [a for a in attempts if a.attempt_idx == 0] if counted == "first_tries" else attempts
    return sum(bool(a.passed) for a in pool) / len(pool) if pool else 0.0


def _copy_reason(cfg: ExperimentConfig, attempt: Attempt) -> str | None:
    return "copies_pi" if cfg.filter.reject_pi_copies and attempt.copies_pi else None


def decide(cfg: ExperimentConfig, attempts: list[Attempt]) -> list[Attempt]:
    """The attempts, each `decided` (accepted, or a reject reason). Frontier pass rates count what
    `filter.frontier_pass_rate_from` says (first tries by default)."""
    by_problem: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_problem[a.problem_id].append(a)
    decided = {}
    for group in by_problem.values():
        rate = pass_rate(group, cfg.filter.frontier_pass_rate_from)
        seen: set[str] = set()
        kept = 0
        for a in group:
            reason = verdict_reason(cfg, a) or _copy_reason(cfg, a) or _frontier_reason(cfg, rate)
            if reason is None and cfg.filter.dedupe and a.completion.strip() in seen:
                reason = "duplicate"
            if reason is None and cfg.filter.max_per_problem is not None and kept >= cfg.filter.max_per_problem:
                reason = "max_per_problem"
            if reason is None:
                seen.add(a.completion.strip())
                kept += 1
            decided[a.attempt_id] = a.decided(reason)
    return [decided[a.attempt_id] for a in attempts]


def sft_examples(
    cfg: ExperimentConfig, key: RoundKey, problems: dict[str, Problem], attempts: list[Attempt], tokenizer
) -> list[dict]:
    """(original prompt without PI, completion) for every accepted attempt; the prompt rendered for the
    model of `tokenizer` (the model this round trains)."""
    from models.prompts import render
    from tasks.sample import style_of

    domain, style = domain_of(cfg), style_of(cfg, tokenizer)
    prompts = {
        pid: render(tokenizer, style, domain.prompt(p), first_messages(domain, p)) for pid, p in problems.items()
    }
    return [
        {
            **key.columns(),
            "problem_id": a.problem_id,
            "attempt_id": a.attempt_id,
            "prompt": prompts[a.problem_id],
            "completion": a.completion,
        }
        for a in attempts
        if a.accepted
    ]


def assert_no_pi(examples: list[dict], attempts: list[Attempt]) -> None:
    """Fail loudly if any training prompt contains a PI block shown to any attempt of the round."""
    blocks = {
        b for a in attempts if a.pi_kind is not None for b in pi_blocks(PrivilegedInfo(a.pi_kind, a.pi_text or ""))
    }
    for ex in examples:
        for block in blocks:
            if block and block in ex["prompt"]:
                raise PILeak(
                    f"training prompt of attempt {ex['attempt_id']} carries privileged information: {block[:120]!r}"
                )


@task(name="filter", cache_policy=NO_CACHE)
def filter_attempts(
    cfg: ExperimentConfig, key: RoundKey, problems: dict[str, Problem], attempts: list[Attempt], model_ref: str
) -> list[dict]:
    """Decide, check for PI leaks, write the round's attempts and SFT examples (prompted as `model_ref`,
    the model this round trains, is); returns the examples."""
    from models.loading import load_tokenizer
    from tasks.train import sft_trains

    with metered(key, "filter") as m:
        attempts = decide(cfg, attempts)
        examples = sft_examples(cfg, key, problems, attempts, load_tokenizer(model_ref))
        assert_no_pi(examples, attempts)
        key.write("attempts", "train", attempts)
        # Lineage: `sft_examples` is what a trainer saw. An arm that does not train on them (method none, OPSD,
        # too few examples) keeps its accepted attempts in `attempts` (accepted = true) and writes no examples.
        key.write("sft_examples", "filter", examples if sft_trains(cfg, len(examples)) else [])
        m["n_items"] = len(attempts)
    return examples
