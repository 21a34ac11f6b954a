"""MBPP (Austin et al. 2021): a task description, a reference solution and three asserts.

    >>> from domains import get_domain
    >>> d = get_domain("mbpp")
    >>> p = d.load("test", limit=1)[0]                  # mbpp/11
    >>> v = d.check(p, "```python\\ndef remove_Occ(s, ch):\\n    return s.strip(ch)\\n```")
    >>> v.status, v.passed, round(v.score, 2)           # 2 of its 3 asserts pass
    ('fail', False, 0.67)

A row of `<data_root>/mbpp/mbpp.jsonl` (the HF dataset `google-research-datasets/mbpp` has the
same fields; `sanitized` has `prompt` and `test_imports` instead of `text` and `test_setup_code`):

    {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given
     character from the string.", "code": "def remove_Occ(s,ch): \\r\\n    for i in range(len(s)): ...",
     "test_setup_code": "", "test_list": ["assert remove_Occ(\\"hello\\",\\"l\\") == \\"heo\\"",
     "assert remove_Occ(\\"abcda\\",\\"a\\") == \\"bcd\\"", "assert remove_Occ(\\"PHP\\",\\"P\\") == \\"H\\""],
     "challenge_test_list": ["assert remove_Occ(\\"hellolloll\\",\\"l\\") == \\"helollol\\"", ...]}

Splits: the official task-id ranges (also for a local file): `test` = 11-510, `prompt` = 1-10
(few-shot), `validation` = 511-600, `train` = 601-974, less the four training tasks that copy a
test task (`TRAIN_COPIES_OF_TEST`: 704, 872, 922, 649); `split_by_task_id=False` uses a file
as-is for every split. The prompt opens a ```python fence, so the completion starts with code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from domains import DomainError
from domains.base import Problem
from domains.code.checker import _CodeDomain
from domains.code.extract import extract_code
from domains.code.specs import HarnessSpec, draft_mbpp
from domains.data import read_jsonl
from domains.pi import PrivilegedInfo, pi_section

MBPP_SPLITS: dict[str, tuple[int, int]] = {
    "test": (11, 510),
    "prompt": (1, 10),
    "validation": (511, 600),
    "train": (601, 974),
}

# Training problems that copy a test problem, found by `domains.decontam` in the raw task-id splits: train
# task id -> the test task it copies. 704 and 872 repeat the statements of 248 and 216; 922 rewords 415 by
# a word and shares two of its asserts; 649 rewords 170 and shares its first assert. Dropped from `train`
# wherever MBPP's own task ids split the rows (the bundled file, another copy, the hub dataset), so a run
# never trains on an evaluation problem; preflight's decontamination check shows that none remain.
TRAIN_COPIES_OF_TEST: dict[int, int] = {704: 248, 872: 216, 922: 415, 649: 170}

_CALLED = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


def _mbpp_entry_point(tests: list[str] | tuple[str, ...]) -> str:
    """The function the tests call: the first call in the first assert that is not a builtin."""
    import builtins

    for name in _CALLED.findall(tests[0] if tests else ""):
        if not hasattr(builtins, name) and name not in ("assert",):
            return name
    return ""


class MBPPDomain(_CodeDomain):
    """MBPP (Austin et al. 2021): a task description plus three asserts; see module docstring."""

    name = "mbpp"
    stop = ("\n```",)
    default_file = "mbpp/mbpp.jsonl"
    required_fields = ("task_id", "text", "code", "test_list")

    def __init__(self, path: str | None = None, *, split_by_task_id: bool = True, **options: Any) -> None:
        super().__init__(path, **options)
        self.split_by_task_id = split_by_task_id

    def _rows(self, split: str) -> list[dict[str, Any]]:
        if split not in MBPP_SPLITS:
            raise DomainError(f"mbpp has splits {', '.join(MBPP_SPLITS)}; not {split!r}")
        if not isinstance(self._source, Path):
            rows = self._hf_rows(split)  # the hub dataset is already split this way
        else:
            rows = read_jsonl(self._source, self.required_fields, what="MBPP row")
            if not self.split_by_task_id:
                return rows  # one file as-is for every split: no MBPP train split to clean
            lo, hi = MBPP_SPLITS[split]
            rows = [r for r in rows if lo <= int(r["task_id"]) <= hi]
        return [r for r in rows if split != "train" or int(r["task_id"]) not in TRAIN_COPIES_OF_TEST]

    def load(self, split: str, limit: int | None = None) -> list[Problem]:
        problems = []
        for row in self._rows(split)[:limit]:
            try:
                tests = tuple(row["test_list"])
                setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
                problems.append(
                    Problem(
                        problem_id=f"mbpp/{int(row['task_id'])}",
                        domain=self.name,
                        question=row.get("text") or row["prompt"],
                        solution=row["code"].replace("\r\n", "\n"),
                        tests=tests,
                        meta={
                            "task_id": int(row["task_id"]),
                            "test_setup_code": setup,
                            "challenge_test_list": list(row.get("challenge_test_list") or []),
                            "entry_point": _mbpp_entry_point(tests),
                        },
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise DomainError(f"{self._source}: bad mbpp row {row.get('task_id')!r}: {exc!r}") from exc
        return problems

    def prompt(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        tests = "\n".join(t.strip() for t in problem.tests)
        text = (
            f"You are an expert Python programmer, and here is your task: {problem.question.strip()} "
            f"Your code should pass these tests:\n\n{tests}\n\n"
        )
        if pi is not None:
            text += pi_section(pi) + "\n\n"
        return text + "```python\n"

    def user_turn(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        tests = "\n".join(t.strip() for t in problem.tests)
        text = (
            f"You are an expert Python programmer, and here is your task: {problem.question.strip()} "
            f"Your code should pass these tests:\n\n{tests}\n\nWrite the code in one ```python block."
        )
        return text if pi is None else f"{text}\n\n{pi_section(pi)}"

    def extract(self, problem: Problem, completion: str) -> str:
        return extract_code(completion, fence_open=True, entry_point=problem.meta.get("entry_point") or None)

    def _draft(self, problem: Problem) -> tuple[dict[str, Any] | None, Callable[[dict[str, Any] | None], HarnessSpec]]:
        """The shown asserts, and with `extra_tests` on, MBPP's challenge tests and that many extra
        inputs mutated from the shown calls' arguments, judged against the reference solution."""
        entry = problem.meta.get("entry_point", "")
        hidden = tuple(problem.meta.get("challenge_test_list") or ()) if self.extra_tests else ()
        draft = draft_mbpp(
            problem.tests,
            problem.meta.get("test_setup_code", ""),
            entry_point=entry,
            reference=problem.solution,
            hidden=hidden,
            extra=self.extra_tests,
            seed=problem.problem_id,
        )
        return (draft.plan_payload(problem.solution) if draft.needs_plan else None), draft.spec
