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

import random

from domains.base import Problem, stable_hash
from domains.numeric import NumericAnswerDomain
from storage.ids import hash_hex, hash_int

TEST_FRACTION_PER_MILLE = 200  # 20 % of all expressions belong to the test split


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

    def __init__(self, path: str | None = None, seed: int = 0, max_ops: int = 3, max_operand: int = 99):
        if path is not None:
            raise ValueError("arith is generated, it reads no file: leave domain.path empty")
        self.seed, self.max_ops, self.max_operand = seed, max_ops, max_operand

    def load(self, split: str, limit: int | None = None) -> list[Problem]:
        if split not in ("train", "test"):
            raise ValueError(f"arith has splits 'train' and 'test', not {split!r}")
        limit = 1000 if limit is None else limit
        rng = random.Random(f"arith:{self.seed}:{self.max_ops}:{self.max_operand}")
        seen: set[str] = set()
        problems: list[Problem] = []
        while len(problems) < limit:
            text, steps, value = _draw(rng, self.max_ops, self.max_operand)
            if text in seen or _split_of(text) != split:
                continue
            seen.add(text)
            problems.append(
                Problem(
                    problem_id=f"arith-{hash_hex(text, n=8)}",
                    domain=self.name,
                    question=f"What is {text}?",
                    answer=str(value),
                    solution=" " + ". ".join(steps) + f". #### {value}",
                    meta={"n_ops": len(steps)},
                )
            )
        return problems

    def data_hash(self) -> str:
        return stable_hash(
            {"domain": "arith", "seed": self.seed, "max_ops": self.max_ops, "max_operand": self.max_operand}
        )
