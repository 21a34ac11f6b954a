"""The try-again loop: which attempts get another try, and what the retry prompt carries.

A failed attempt (not accepted by its verdict) gets one follow-up request per
loop step, up to `retry.max_retries` (K) steps; the follow-up's `parent_id` is
the failed attempt, its `attempt_idx` one more. With `retry.strategy: retry`
the follow-up prompt carries privileged information of kind `retry.feedback`:

    none               "Your previous answer was wrong. Try again."
    correct_answer     the reference answer (math: the number; code: the reference program)
    wrong_answer       a plausible wrong answer (math: the answer perturbed; else another problem's answer)
    gibberish          random letters, as long as the correct answer's text (seeded)
    previous_attempt   the failed completion itself
    verifier_feedback  the verdict's feedback (failing test, type-checker error)
    self_diagnosis     the model's own diagnosis of the failure, sampled first
    skeleton           the `have` skeleton of a reference proof (Lean)
    reference_solution the full reference solution

With `retry.strategy: resample` (the double-sample control) the follow-up is
a fresh sample of the original prompt: the same budget, no failure signal.
"""

from __future__ import annotations

import random
import string

from domains import Domain, PrivilegedInfo, Problem
from experiments.config import ExperimentConfig
from tasks.common import derive_seed, domain_of
from tasks.filter import verdict_reason
from tasks.sample import SampleRequest

DIAGNOSIS_CUE = "\nThe attempt above is wrong. In one or two sentences, what went wrong?\nDiagnosis:"


class PIUnavailable(ValueError):
    """This domain cannot supply this kind of privileged information."""


def failed(cfg: ExperimentConfig, rows: list[dict]) -> list[dict]:
    """Attempts whose verdict would not be accepted (the ones that get another try)."""
    return [r for r in rows if verdict_reason(cfg, r) is not None and r["status"] != "error"]


def reference_answer(domain: Domain, problem: Problem) -> str:
    if hasattr(domain, "reference_answer"):
        return domain.reference_answer(problem)
    if problem.answer or problem.solution:
        return problem.answer or problem.solution
    raise PIUnavailable(f"{domain.name} has no reference answer for {problem.problem_id}")


def wrong_answer(domain: Domain, problem: Problem, pool: list[Problem], rng: random.Random) -> str:
    """Plausible but wrong: the domain's own perturbation, else another problem's reference answer."""
    if hasattr(domain, "wrong_answer"):
        return domain.wrong_answer(problem, rng)
    right = reference_answer(domain, problem)
    others = [a for p in pool if p.problem_id != problem.problem_id and (a := reference_answer(domain, p)) != right]
    if not others:
        raise PIUnavailable(f"no wrong answer available for {problem.problem_id}")
    return rng.choice(others)


def gibberish(length: int, rng: random.Random) -> str:
    """Random lowercase 'words' of total length `length` (at least 3)."""
    letters = [rng.choice(string.ascii_lowercase) for _ in range(max(3, length))]
    for i in range(rng.randint(3, 7), len(letters) - 1, rng.randint(3, 7)):
        letters[i] = " "
    return "".join(letters).strip() or "xqz"


def make_pi(
    kind: str, domain: Domain, problem: Problem, row: dict, pool: list[Problem], rng: random.Random,
    diagnosis: str | None = None,
) -> PrivilegedInfo:
    if kind == "none":
        return PrivilegedInfo("none", "")
    if kind == "correct_answer":
        return PrivilegedInfo(kind, reference_answer(domain, problem))
    if kind == "wrong_answer":
        return PrivilegedInfo(kind, wrong_answer(domain, problem, pool, rng))
    if kind == "gibberish":
        return PrivilegedInfo(kind, gibberish(len(reference_answer(domain, problem)), rng))
    if kind == "previous_attempt":
        return PrivilegedInfo(kind, row["completion"].strip() or "(empty)")
    if kind == "verifier_feedback":
        return PrivilegedInfo(kind, (row.get("feedback") or "").strip() or "(the checker gave no detail)")
    if kind == "self_diagnosis":
        return PrivilegedInfo(kind, (diagnosis or "").strip() or "(no diagnosis)")
    if kind == "skeleton":
        if not hasattr(domain, "skeleton"):
            raise PIUnavailable(f"{domain.name} has no proof skeletons (skeleton PI is for Lean)")
        return PrivilegedInfo(kind, domain.skeleton(problem))
    if kind == "reference_solution":
        if not problem.solution:
            raise PIUnavailable(f"{domain.name} has no reference solution for {problem.problem_id}")
        return PrivilegedInfo(kind, problem.solution.strip())
    raise PIUnavailable(f"unknown pi kind {kind!r}")


def diagnosis_prompt(domain: Domain, problem: Problem, row: dict) -> str:
    """What the model is asked, before a self_diagnosis retry, about its failed attempt."""
    return f"{domain.prompt(problem)}{row['completion']}{DIAGNOSIS_CUE}"


def follow_ups(
    cfg: ExperimentConfig,
    seed: int,
    round: int,
    problems: dict[str, Problem],
    failures: list[dict],
    attempt_idx: int,
    diagnoses: dict[str, str] | None = None,
) -> list[SampleRequest]:
    """One request per failed attempt: a retry with PI, or (resample) the original prompt again."""
    domain = domain_of(cfg)
    pool = list(problems.values())
    out = []
    for row in failures:
        problem = problems[row["problem_id"]]
        if cfg.retry.strategy == "resample":
            out.append(SampleRequest(problem, domain.prompt(problem), attempt_idx, row["attempt_id"]))
            continue
        rng = random.Random(derive_seed(seed, round, "pi", row["attempt_id"]))
        pi = make_pi(cfg.retry.feedback, domain, problem, row, pool, rng, (diagnoses or {}).get(row["attempt_id"]))
        out.append(SampleRequest(problem, domain.prompt(problem, pi), attempt_idx, row["attempt_id"], pi))
    return out
