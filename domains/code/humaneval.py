"""HumanEval (Chen et al. 2021): complete a Python function from its signature and docstring.

    >>> from domains import get_domain
    >>> d = get_domain("humaneval")
    >>> p = d.load("test", limit=1)[0]                  # humaneval/0
    >>> d.check(p, p.solution).passed                   # the body continuing the prompt
    True

A row of `<data_root>/humaneval/HumanEval.jsonl.gz` (as the HF dataset `openai/openai_humaneval`):

    {"task_id": "HumanEval/0", "entry_point": "has_close_elements",
     "prompt": "from typing import List\\n\\n\\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\\n    \\"\\"\\" Check if ...",
     "canonical_solution": "    for idx, elem in enumerate(numbers):\\n ...",
     "test": "\\n\\nMETADATA = {...}\\n\\n\\ndef check(candidate):\\n    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\\n ..."}

The prompt is the row's `prompt`; a completion is either a full function (it replaces the
prompt's stub) or the body continuing it (`extract.humaneval_solution`). Each statement of
`check(candidate)` is a test. One split, `test`: HumanEval is an evaluation benchmark, so
`load("train")` raises DomainError unless the domain was built with `train_on_test=True` (an
explicit opt-in to training on the evaluation problems, e.g. for test-time self-improvement),
which returns the same problems; a run then also sets `domain.decontaminate: false`, or preflight
refuses it for training on its evaluation problems (`domains.decontam`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from domains import DomainError
from domains.base import Problem
from domains.code.checker import _CodeDomain
from domains.code.extract import humaneval_solution
from domains.code.specs import HarnessSpec, extra_tests, humaneval_check, humaneval_plan_payload, humaneval_spec
from domains.data import read_jsonl
from domains.pi import PrivilegedInfo, pi_section


class HumanEvalDomain(_CodeDomain):
    """HumanEval (Chen et al. 2021): complete a function from its signature and docstring."""

    name = "humaneval"
    # The standard HumanEval stop sequences: the function ends at the next top-level statement.
    stop = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    default_file = "humaneval/HumanEval.jsonl.gz"
    required_fields = ("task_id", "prompt", "canonical_solution", "test", "entry_point")

    def __init__(self, path: str | None = None, *, train_on_test: bool = False, **options: Any) -> None:
        super().__init__(path, **options)
        self.train_on_test = train_on_test

    def _rows(self, split: str) -> list[dict[str, Any]]:
        if split == "train":
            if not self.train_on_test:
                raise DomainError(
                    "humaneval is an evaluation benchmark with only a 'test' split; train on mbpp, or build "
                    "the domain with train_on_test=True to use the test problems for training on purpose"
                )
        elif split != "test":
            raise DomainError(
                f"humaneval has only the split 'test' (and 'train' with train_on_test=True), not {split!r}"
            )
        if not isinstance(self._source, Path):
            return self._hf_rows("test")
        return read_jsonl(self._source, self.required_fields, what="HumanEval row")

    def load(self, split: str, limit: int | None = None) -> list[Problem]:
        problems = []
        for row in self._rows(split)[:limit]:
            try:
                number = str(row["task_id"]).rsplit("/", 1)[-1]
                humaneval_check(row["prompt"], row["test"], row["entry_point"], "")  # fail at load, not at check time
                problems.append(
                    Problem(
                        problem_id=f"humaneval/{number}",
                        domain=self.name,
                        question=row["prompt"],
                        solution=row["canonical_solution"],
                        tests=(row["test"],),
                        meta={"task_id": row["task_id"], "entry_point": row["entry_point"]},
                    )
                )
            except (KeyError, TypeError, ValueError, SyntaxError) as exc:  # SpecError is a ValueError
                raise DomainError(f"{self._source}: bad humaneval row {row.get('task_id')!r}: {exc!r}") from exc
        return problems

    def prompt(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        if pi is None:
            return problem.question
        # The answer cue is the function's own prompt, so privileged information goes before it,
        # as comments (it may contain code or quotes that would break a docstring).
        note = "\n".join(f"# {line}".rstrip() for line in pi_section(pi).splitlines())
        return f"{note}\n\n{problem.question}"

    def user_turn(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        text = (
            "Complete the following Python function. Write the whole function in one ```python block.\n\n"
            f"```python\n{problem.question.rstrip()}\n```"
        )
        return text if pi is None else f"{text}\n\n{pi_section(pi)}"

    def extract(self, problem: Problem, completion: str) -> str:
        return humaneval_solution(problem.question, completion, problem.meta["entry_point"])

    def _draft(self, problem: Problem) -> tuple[dict[str, Any] | None, Callable[[dict[str, Any] | None], HarnessSpec]]:
        """`check(candidate)` run once with the reference behind a recording stub (the inputs each step
        gives the candidate), and with `extra_tests` on, extra inputs mutated from the literal calls."""
        entry = problem.meta["entry_point"]
        check = humaneval_check(problem.question, problem.tests[0], entry, seed=problem.problem_id)
        names = frozenset({check.arg, entry})
        extra = extra_tests([s.src for s in check.steps], names, self.extra_tests, problem.problem_id)
        reference = problem.question + problem.solution
        want = self.extra_tests

        def finish(plan: dict[str, Any] | None) -> HarnessSpec:
            return humaneval_spec(check, plan or {}, extra, want)

        return humaneval_plan_payload(check, reference, extra, want), finish
