"""The contract every problem domain implements, and the values that cross it.

A domain turns a dataset into `Problem`s, a problem (plus optional privileged
information) into a prompt, and a completion into a `Verdict`:

    >>> d = get_domain("arith")
    >>> p = d.load("test", limit=1)[0]
    >>> p.problem_id, p.answer
    ('arith-5d41402a', '70')
    >>> d.check(p, " 37+48=85. 85-15=70. #### 70").status
    'pass'

`check` is pure and never raises for a bad completion: a wrong answer is
`status="fail"`, a verifier crash is `status="error"` (counted apart from wrong
answers, so a broken checker cannot silently reshape a training set).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from domains.pi import PIUnavailable, PrivilegedInfo

Message = dict[str, str]  # one chat turn: {"role": "system" | "user" | "assistant", "content": ...}

VerdictStatus = Literal["pass", "fail", "error", "timeout"]
VERDICT_STATUSES: tuple[str, ...] = ("pass", "fail", "error", "timeout")

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Problem:
    """One task instance. `answer` is the reference final answer (as text),
    `solution` the reference worked solution; `tests`/`meta` carry what a
    domain needs to check (unit tests, a Lean header, ...)."""

    problem_id: str
    domain: str
    question: str
    answer: str = ""
    solution: str = ""
    tests: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Verdict:
    """What a verifier says about one completion.

    status: pass | fail | error | timeout. `passed` is the binary verdict;
    `score` in [0, 1] the graded one (fraction of tests passed; 1.0/0.0 for
    domains with a single check). `feedback` is short text fit for a retry
    prompt (first failing test, type-checker error, ...). `reason` names a kind of
    fail the filter reports apart (`no_answer`: nothing in the domain's answer format).
    """

    status: VerdictStatus
    passed: bool
    score: float
    feedback: str = ""
    reason: str | None = None  # why a fail failed, when a domain can say it in a word: no_answer
    flags: str | None = None  # what the program reached for that a harness runs on (code: domains.code.flags)

    def __post_init__(self) -> None:
        if self.status not in VERDICT_STATUSES:
            raise ValueError(f"Verdict.status must be one of {VERDICT_STATUSES}, got {self.status!r}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"Verdict.score must be in [0, 1], got {self.score!r}")
        if self.passed and self.status != "pass":
            raise ValueError(f"Verdict.passed=True needs status 'pass', got {self.status!r}")

    @classmethod
    def crashed(cls, exc: BaseException) -> Verdict:
        """The verdict when the checker itself raised: an error, counted apart from wrong answers."""
        return cls.error(f"verifier crashed: {type(exc).__name__}: {exc}")

    @classmethod
    def error(cls, feedback: str) -> Verdict:
        return cls(status="error", passed=False, score=0.0, feedback=feedback[:2000])


@runtime_checkable
class Domain(Protocol):
    """A problem domain. See module docstring."""

    name: str
    stop: tuple[str, ...]  # strings that end a plain-text completion (sampler stop sequences)
    chat_stop: tuple[str, ...]  # the same for a chat model (its end-of-turn token ends it already)

    def load(self, split: Split, limit: int | None = None) -> list[Problem]:
        """Problems of `split` in a fixed order, at most `limit` of them."""
        ...

    def prompt(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        """The text a base model continues. With `pi`, the retry/teacher prompt."""
        ...

    def user_turn(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        """What a chat model is asked in its user turn: the problem and the answer format, no answer cue
        (the template's assistant header is the cue). With `pi`, the PI block follows the problem."""
        ...

    def check(self, problem: Problem, completion: str) -> Verdict:
        """Verify one completion. Never raises for a bad completion."""
        ...

    def check_many(self, problems: list[Problem], completions: list[str]) -> list[Verdict]:
        """Verify many (same order). Domains that can parallelise override it."""
        ...

    def data_hash(self) -> str:
        """A hash of the data this domain reads (file contents, generator recipe)."""
        ...

    def preflight(self) -> None:
        """Raise unless this domain can run here (e.g. Lean installed); writes nothing."""
        ...

    def reference_answer(self, problem: Problem) -> str:
        """The reference answer (correct_answer PI); PIUnavailable when there is none."""
        ...

    def wrong_answer(self, problem: Problem, rng: random.Random) -> str | None:
        """A plausible wrong answer (wrong_answer PI), or None: use another problem's answer."""
        ...

    def skeleton(self, problem: Problem) -> str:
        """The outline of a reference proof (skeleton PI); PIUnavailable where there is none."""
        ...

    def final_answer(self, problem: Problem, completion: str) -> str | None:
        """The final answer of `completion` as the checker reads it (domains.pi_copy compares it with the
        answers a PI gave); None when it has none, or the domain judges no single answer (code, Lean)."""
        ...

    def normalize_answer(self, answer: str) -> str | None:
        """A bare answer (a correct_answer / wrong_answer PI's text) in `final_answer`'s form; None likewise."""
        ...

    def broken_step(self, completion: str) -> str | None:
        """A step of `completion` that does not hold, where a step can be checked on its own (numeric
        domains: written-out arithmetic, '9 * 3 = 18'); None when none is found or none can be checked."""
        ...


class BaseDomain:
    """Shared plumbing: `check_many` that maps `check` and turns any exception
    into an ERROR verdict, and the defaults of the optional parts of `Domain`
    (no preflight, no own wrong answer, no proof skeleton, the plain prompt as the chat user turn,
    no single final answer and no steps to check)."""

    name = "base"
    stop: tuple[str, ...] = ()
    chat_stop: tuple[str, ...] = ()
    # Decontamination (domains.decontam) compares this domain's problems verbatim only: True for a templated
    # domain whose problems differ in a number, so that two alike texts are still different problems.
    exact_duplicates_only: bool = False

    def user_turn(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        """The plain prompt as the user turn: right for domains whose completion continues a given text."""
        return self.prompt(problem, pi)  # type: ignore[attr-defined]  # every domain defines prompt

    def check(self, problem: Problem, completion: str) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError

    def preflight(self) -> None:
        """Nothing to check beyond loading the data (which preflight does for every domain)."""

    def reference_answer(self, problem: Problem) -> str:
        if problem.answer or problem.solution:
            return problem.answer or problem.solution
        raise PIUnavailable(f"{self.name} has no reference answer for {problem.problem_id}")

    def wrong_answer(self, problem: Problem, rng: random.Random) -> str | None:
        """None: this domain has no perturbation of its own, so `domains.pi.wrong_answer`
        falls back to another problem's reference answer (not an exception: an override's
        PIUnavailable must still mean "unavailable", not "use the fallback")."""
        return None

    def skeleton(self, problem: Problem) -> str:
        raise PIUnavailable(f"{self.name} has no proof skeletons (skeleton PI is for Lean)")

    def final_answer(self, problem: Problem, completion: str) -> str | None:
        return None

    def normalize_answer(self, answer: str) -> str | None:
        return None

    def broken_step(self, completion: str) -> str | None:
        return None

    def check_many(self, problems: list[Problem], completions: list[str]) -> list[Verdict]:
        if len(problems) != len(completions):
            raise ValueError(f"check_many: {len(problems)} problems but {len(completions)} completions")
        return [safe_check(self, p, c) for p, c in zip(problems, completions)]


def safe_check(domain: Any, problem: Problem, completion: str) -> Verdict:
    """`domain.check`, with a crash of the checker itself reported as an ERROR verdict."""
    try:
        return domain.check(problem, completion)
    except Exception as exc:  # a verifier bug is an error, never a wrong answer
        return Verdict.crashed(exc)


def file_sha256(*paths: Path | str) -> str:
    """sha256 over the bytes of the given files, in order (first 16 hex digits)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def stable_hash(obj: Any, n: int = 16) -> str:
    """A short hex digest of a JSON-serialisable object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]
