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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

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
    prompt (first failing test, type-checker error, ...).
    """

    status: VerdictStatus
    passed: bool
    score: float
    feedback: str = ""

    def __post_init__(self) -> None:
        if self.status not in VERDICT_STATUSES:
            raise ValueError(f"Verdict.status must be one of {VERDICT_STATUSES}, got {self.status!r}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"Verdict.score must be in [0, 1], got {self.score!r}")
        if self.passed and self.status != "pass":
            raise ValueError(f"Verdict.passed=True needs status 'pass', got {self.status!r}")

    @classmethod
    def error(cls, feedback: str) -> "Verdict":
        return cls(status="error", passed=False, score=0.0, feedback=feedback[:2000])


@dataclass(frozen=True)
class PrivilegedInfo:
    """Extra information shown in a prompt but never in a training prompt.

    kind names what it is (`correct_answer`, `wrong_answer`, `gibberish`,
    `previous_attempt`, `verifier_feedback`, `self_diagnosis`, `skeleton`,
    `reference_solution`, `none`); text is what the prompt carries.
    """

    kind: str
    text: str = ""


@runtime_checkable
class Domain(Protocol):
    """A problem domain. See module docstring."""

    name: str

    def load(self, split: Split, limit: int | None = None) -> list[Problem]:
        """Problems of `split` in a fixed order, at most `limit` of them."""
        ...

    def prompt(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        """The text the model continues. With `pi`, the retry/teacher prompt."""
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


class BaseDomain:
    """Shared plumbing: `check_many` that maps `check` and turns any exception
    into an ERROR verdict, and file hashing for `data_hash`."""

    name = "base"
    stop: tuple[str, ...] = ()

    def check(self, problem: Problem, completion: str) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_many(self, problems: list[Problem], completions: list[str]) -> list[Verdict]:
        if len(problems) != len(completions):
            raise ValueError(f"check_many: {len(problems)} problems but {len(completions)} completions")
        return [safe_check(self, p, c) for p, c in zip(problems, completions)]


def safe_check(domain: Any, problem: Problem, completion: str) -> Verdict:
    """`domain.check`, with a crash of the checker itself reported as an ERROR verdict."""
    try:
        return domain.check(problem, completion)
    except Exception as exc:  # a verifier bug is an error, never a wrong answer
        return Verdict.error(f"verifier crashed: {type(exc).__name__}: {exc}")


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


# How each kind of privileged information reads in a prompt. Domains put this
# block between the problem and the answer cue; the stored prompt shows it.
PI_TEMPLATES: dict[str, str] = {
    "none": "Your previous answer was wrong. Try again.",
    "correct_answer": "Your previous answer was wrong. Hint: the correct final answer is {text}. Try again.",
    "wrong_answer": "Your previous answer was wrong. Hint: the final answer might be {text}. Try again.",
    "gibberish": "Your previous answer was wrong. Hint: {text}. Try again.",
    "previous_attempt": "Your previous attempt was wrong:\n{text}\nTry again.",
    "verifier_feedback": "Your previous attempt was wrong. The checker said:\n{text}\nTry again.",
    "self_diagnosis": "Your previous attempt was wrong. What went wrong:\n{text}\nTry again.",
    "skeleton": "Your previous attempt was wrong. A proof can follow this outline:\n{text}\nTry again.",
    "reference_solution": "Here is a reference solution:\n{text}\nNow write your own solution.",
}


def pi_section(pi: PrivilegedInfo | None) -> str:
    """The privileged-information block of a prompt ("" when there is none)."""
    if pi is None:
        return ""
    if pi.kind not in PI_TEMPLATES:
        raise ValueError(f"unknown pi kind {pi.kind!r}; known: {', '.join(sorted(PI_TEMPLATES))}")
    return PI_TEMPLATES[pi.kind].format(text=pi.text.strip())
