"""`arith`: procedural multi-step integer arithmetic, seeded and unlimited.

One problem and its reference solution:

    question: "What is 7 * 6 + 48 - 15?"
    solution: " 7*6=42. 42+48=90. 90-15=75. #### 75"

Expressions have 1-3 operations on numbers below 100 (a leading `a*b` with
b <= 9 now and then), evaluated left to right, never negative. A problem's
split is decided by a hash of its expression, so train and test are disjoint
by construction and any number of either can be drawn.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from domains.base import Problem, stable_hash
from domains.data import DomainError
from domains.numeric import NumericAnswerDomain
from storage.ids import hash_hex, hash_int

TEST_FRACTION_PER_MILLE = 200  # 20 % of all expressions belong to the test split
# Draws in a row that bring no new problem before a split counts as exhausted. Each new problem resets it,
# so a large setting never gets near it: with max_operand 99 a miss streak of even 50 is vanishingly rare.
MISSES = 20_000


def _split_of(expression: str) -> str:
    bucket = hash_int(expression) % 1000
    return "test" if bucket < TEST_FRACTION_PER_MILLE else "train"


def _draw(rng: random.Random, max_ops: int, max_operand: int) -> tuple[str, list[str], int]:
    """One expression: (text, solution steps, value)."""
    n_ops = rng.randint(1, max_ops)
    if rng.random() < 0.25:
        a, b = rng.randint(2, 12), rng.randint(2, 9)
        value, text, steps = a * b, f"{a} * {b}", [f"{a}*{b}={a * b}"]
        n_ops -= 1
    else:
        value = rng.randint(1, max_operand)
        text, steps = str(value), []
    for _ in range(n_ops):
        b = rng.randint(1, max_operand)
        op = "-" if b <= value and rng.random() < 0.5 else "+"
        new = value - b if op == "-" else value + b
        steps.append(f"{value}{op}{b}={new}")
        text += f" {op} {b}"
        value = new
    return text, steps, value


class ArithDomain(NumericAnswerDomain):
    name = "arith"
    stop = ("\n",)
    exact_duplicates_only = True  # "What is 7 * 6 + 48 - 15?" and "... - 16?" look alike, and differ

    def __init__(
        self,
        path: str | None = None,
        seed: int = 0,
        max_ops: int = 3,
        max_operand: int = 99,
        last_number_fallback: bool = False,
    ):
        if path is not None:
            raise ValueError("arith is generated, it reads no file: leave domain.path empty")
        self.seed, self.max_ops, self.max_operand = seed, max_ops, max_operand
        self.last_number_fallback = last_number_fallback

    def load(self, split: str, limit: int | None = None) -> list[Problem]:
        """The first `limit` distinct problems of `split` (default 1000); DomainError when this setting
        (max_ops, max_operand) has fewer: a small setting runs out of distinct expressions."""
        limit = 1000 if limit is None else limit
        problems = list(itertools.islice(self._distinct(split), limit))
        if len(problems) < limit:
            raise DomainError(
                f"arith with max_ops={self.max_ops}, max_operand={self.max_operand} has only {len(problems)} "
                f"distinct {split} problems, {limit} were asked for: raise domain.max_operand or domain.max_ops, "
                f"or ask for fewer ({'domain.train_size' if split == 'train' else 'domain.eval_size'})"
            )
        return problems

    def available(self, split: str, up_to: int) -> int:
        """How many distinct problems `split` has, counting no further than `up_to`."""
        return sum(1 for _ in itertools.islice(self._distinct(split), up_to))

    def _distinct(self, split: str) -> Iterator[Problem]:
        """Distinct problems of `split` in draw order, until MISSES draws in a row bring nothing new (a draw
        is microseconds, so giving up takes a fraction of a second)."""
        if split not in ("train", "test"):
            raise ValueError(f"arith has splits 'train' and 'test', not {split!r}")
        rng = random.Random(f"arith:{self.seed}:{self.max_ops}:{self.max_operand}")
        seen: set[str] = set()
        misses = 0
        while misses < MISSES:
            text, steps, value = _draw(rng, self.max_ops, self.max_operand)
            if text in seen or _split_of(text) != split:
                misses += 1
                continue
            misses = 0
            seen.add(text)
            yield Problem(
                problem_id=f"arith-{hash_hex(text, n=8)}",
                domain=self.name,
                question=f"What is {text}?",
                answer=str(value),
                solution=" " + ". ".join(steps) + f". #### {value}",
                meta={"n_ops": len(steps)},
            )

    def data_hash(self) -> str:
        return stable_hash(
            {"domain": "arith", "seed": self.seed, "max_ops": self.max_ops, "max_operand": self.max_operand}
        )
