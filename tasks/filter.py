"""Stage `filter`: decide which verified attempts become training examples.

Every attempt gets `accepted` and, when rejected, a `reject_reason`:

    failed | timeout | verifier_error | below_threshold      (the verdict)
    frontier_too_hard | frontier_too_easy                  (problem pass rate outside the bounds)
    duplicate | max_per_problem                            (dedupe and caps, per problem)

An accepted attempt trains on the problem's *original* prompt (no privileged
information, no retry scaffold) -> its completion. `assert_no_pi` checks every
example against every attempt's PI block and fails the round if one leaked.
"""

from __future__ import annotations

from collections import defaultdict

from prefect import task
from prefect.cache_policies import NO_CACHE

from domains import PrivilegedInfo, Problem
from domains.base import pi_section
from experiments.config import ExperimentConfig
from storage.writer import write_rows
from tasks.common import RoundKey, domain_of, metered

_VERDICT_REASON = {"fail": "failed", "timeout": "timeout", "error": "verifier_error"}


class PILeak(RuntimeError):
    """A training prompt carries privileged information."""


def verdict_reason(cfg: ExperimentConfig, row: dict) -> str | None:
    if row["status"] in ("error", "timeout"):
        return _VERDICT_REASON[row["status"]]
    if cfg.verify.mode == "graded":
        return None if row["score"] >= cfg.verify.threshold else "below_threshold"
    return None if row["passed"] else "failed"


def _frontier_reason(cfg: ExperimentConfig, pass_rate: float) -> str | None:
    f = cfg.filter
    if not f.frontier:
        return None
    if pass_rate <= f.frontier_low:
        return "frontier_too_hard"
    if pass_rate >= f.frontier_high:
        return "frontier_too_easy"
    return None


def decide(cfg: ExperimentConfig, rows: list[dict]) -> list[dict]:
    """Rows with `accepted` / `reject_reason` set. Pass rates count every attempt of the round."""
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_problem[row["problem_id"]].append(row)
    decided = {}
    for problem_id, group in by_problem.items():
        rate = sum(r["passed"] for r in group) / len(group)
        seen: set[str] = set()
        kept = 0
        for row in group:
            reason = verdict_reason(cfg, row) or _frontier_reason(cfg, rate)
            if reason is None and cfg.filter.dedupe and row["completion"].strip() in seen:
                reason = "duplicate"
            if reason is None and cfg.filter.max_per_problem is not None and kept >= cfg.filter.max_per_problem:
                reason = "max_per_problem"
            if reason is None:
                seen.add(row["completion"].strip())
                kept += 1
            decided[row["attempt_id"]] = {**row, "accepted": reason is None, "reject_reason": reason}
    return [decided[r["attempt_id"]] for r in rows]


def sft_examples(cfg: ExperimentConfig, key: RoundKey, problems: dict[str, Problem], rows: list[dict]) -> list[dict]:
    """(original prompt without PI, completion) for every accepted attempt."""
    domain = domain_of(cfg)
    return [
        {
            **key.columns(),
            "problem_id": r["problem_id"],
            "attempt_id": r["attempt_id"],
            "prompt": domain.prompt(problems[r["problem_id"]]),
            "completion": r["completion"],
        }
        for r in rows
        if r["accepted"]
    ]


def assert_no_pi(examples: list[dict], rows: list[dict]) -> None:
    """Fail loudly if any training prompt contains a PI block shown to any attempt of the round."""
    blocks = {
        pi_section(PrivilegedInfo(r["pi_kind"], r["pi_text"] or ""))
        for r in rows
        if r.get("pi_kind") is not None
    }
    for ex in examples:
        for block in blocks:
            if block and block in ex["prompt"]:
                raise PILeak(f"training prompt of attempt {ex['attempt_id']} carries privileged information: {block[:120]!r}")


@task(name="filter", cache_policy=NO_CACHE)
def filter_attempts(cfg: ExperimentConfig, key: RoundKey, problems: dict[str, Problem], rows: list[dict]) -> list[dict]:
    """Decide, check for PI leaks, write the round's attempts and SFT examples; returns the examples."""
    with metered(key, "filter") as m:
        rows = decide(cfg, rows)
        examples = sft_examples(cfg, key, problems, rows)
        assert_no_pi(examples, rows)
        write_rows(key.path("attempts", "train"), rows, "attempts")
        write_rows(key.path("sft_examples", "filter"), examples, "sft_examples")
        m["n_items"] = len(rows)
    return examples
