"""Final-answer extraction and checking for numeric math domains (arith, gsm8k).

    >>> extract_answer("She pays 3 * $4 = $12.\\n#### $1,234.50 dollars")
    '1234.5'
    >>> extract_answer("so the answer is 42 apples.")
    '42'

Order of preference: the text after the last `####`, then the last `\\boxed{X}` (the
format Qwen and DeepSeek math models are tuned to write), then "the answer is X".
Commas, `$`, `%` and trailing units are ignored; numbers compare exactly as
decimals (`12.0` == `12`). The last number anywhere in the text is *not* an
answer by default: chatty wrong completions passed by coincidence ("1 - 1":
"There is a difference between 1 and 0..."). Domains take the option
`last_number_fallback: true` (domain.options) for completions known to end
with their number. A completion with no answer fails with reason `no_answer`.

Arithmetic written out as steps can be checked one by one (`broken_step`), which tells a retry
that bent a step to land on an answer its hint gave (domains/pi_copy.py):

    >>> broken_step("16 - 3 - 4 = 9 eggs. 9 * $2 = $18. #### 18") is None
    True
    >>> broken_step("16 - 3 - 4 = 9 eggs. 9 * $3 = $18. #### 18")
    '9 * $3 = $18'
"""

from __future__ import annotations

import ast
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from domains.base import BaseDomain, Problem, Verdict
from domains.pi import PrivilegedInfo, pi_section

# A chat model is told the answer format (a base model learns it from the plain prompt's "Answer:" and
# its training). `####` is what the checker reads first; SmolLM2-135M-Instruct ignores it and writes
# "The answer is: 50", which the checker reads too (benchmarks/smollm2_baseline.py, README).
CHAT_ANSWER_FORMAT = "Solve it step by step. End with the final answer on its own line as '#### <number>'."

_NUMBER = re.compile(r"-?\$?\s*\d[\d,]*(?:\.\d+)?|-?\$?\s*\.\d+")
_ANSWER_IS = re.compile(r"answer is[:\s]*(.*)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def normalize_number(text: str) -> str | None:
    """'$1,234.50' -> '1234.5'; None when `text` holds no number."""
    m = _NUMBER.search(text)
    if not m:
        return None
    raw = m.group(0).replace("$", "").replace(",", "").replace(" ", "")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_answer(completion: str, last_number: bool = False) -> str | None:
    """The final numeric answer of a completion (see module docstring), or None. `last_number`: fall back
    to the last number anywhere in the text."""
    if "####" in completion:
        tail = completion.rsplit("####", 1)[1].strip().splitlines()
        return normalize_number(tail[0]) if tail else None
    boxed = _BOXED.findall(completion)
    if boxed and (found := normalize_number(boxed[-1])):
        return found
    said = list(_ANSWER_IS.finditer(completion))
    m = said[-1] if said else None  # the last "the answer is ..." counts
    if m and (found := normalize_number(m.group(1))):
        return found
    if not last_number:
        return None
    numbers = _NUMBER.findall(completion)
    return normalize_number(numbers[-1]) if numbers else None


# A written-out step: numbers and + - * / × ÷ (brackets, $, spaces) on one line, '=', a number. Words between
# the numbers ('3 apples + 4'), a percent sign or an 'x' for times make it a step this does not check.
_STEP = re.compile(r"(?P<lhs>[\d.,$()+\-*/×÷ \t]+)=[ \t]*(?P<rhs>-?[ \t]*\$?[ \t]*\d[\d,]*(?:\.\d+)?)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_OPS = {ast.Add: Fraction.__add__, ast.Sub: Fraction.__sub__, ast.Mult: Fraction.__mul__, ast.Div: Fraction.__truediv__}


def _arithmetic(node: ast.AST) -> Fraction:
    """The exact value of a parsed expression of numbers, + - * / and signs; ValueError for anything else."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _arithmetic(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    raise ValueError(f"not arithmetic: {ast.dump(node)[:40]}")


def _step(lhs: str) -> tuple[str, Fraction] | None:
    """The longest tail of `lhs` that is an arithmetic expression with an operator in it, and its value
    ('Step 1. 5 + 3' -> ('5 + 3', 8): the '1.' before it is no part of the step); None when there is none."""
    words = lhs.split()
    for start in range(len(words)):
        written = " ".join(words[start:]).strip(".,")
        expression = _THOUSANDS.sub("", written).replace("$", "").replace("×", "*").replace("÷", "/")
        if "**" in expression or "," in expression:  # a power, a list: not a step
            continue
        try:
            tree = ast.parse(expression, mode="eval").body
            if isinstance(tree, ast.BinOp):
                return written, _arithmetic(tree)
        except (SyntaxError, ValueError, ZeroDivisionError):
            continue
    return None


def broken_step(completion: str) -> str | None:
    """The first written-out arithmetic step of `completion` that does not hold ('9 * 3 = 18'), or None.
    A result may be rounded to the places it is written with ('10 / 3 = 3.33' holds)."""
    for m in _STEP.finditer(completion):
        step = _step(m.group("lhs"))
        if step is None:
            continue
        written, value = step
        result = "".join(m.group("rhs").split())
        number = result.replace("$", "").replace(",", "")
        places = len(number.partition(".")[2])
        if abs(value - Fraction(number)) > Fraction(1, 2 * 10**places):
            return f"{written} = {result}"
    return None


class NumericAnswerDomain(BaseDomain):
    """A domain whose problems have one numeric final answer, written after `####`."""

    instruction = ""
    last_number_fallback = False  # domain.options: {last_number_fallback: true} accepts the last number too

    def prompt(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        parts = [f"Question: {problem.question}"]
        if self.instruction:
            parts.insert(0, self.instruction)
        if pi is not None:
            parts.append(pi_section(pi))
        return "\n".join(parts) + "\nAnswer:"

    def user_turn(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        parts = [problem.question.strip(), CHAT_ANSWER_FORMAT]
        if pi is not None:
            parts.append(pi_section(pi))
        return "\n\n".join(parts)

    def wrong_answer(self, problem: Problem, rng) -> str:
        """A plausible wrong final answer: the reference moved by a few units (about 20 % for large ones)."""
        value = Decimal(normalize_number(problem.answer) or "0")
        span = max(3, int(abs(value) * Decimal("0.2")))
        wrong = value + rng.randint(1, span) * rng.choice((-1, 1))
        return normalize_number(str(wrong)) or str(wrong)

    def final_answer(self, problem: Problem, completion: str) -> str | None:
        return extract_answer(completion, last_number=self.last_number_fallback)

    def normalize_answer(self, answer: str) -> str | None:
        return normalize_number(answer)

    def broken_step(self, completion: str) -> str | None:
        return broken_step(completion)

    def check(self, problem: Problem, completion: str) -> Verdict:
        expected = normalize_number(problem.answer)
        if expected is None:
            return Verdict.error(f"problem {problem.problem_id} has no numeric reference answer: {problem.answer!r}")
        got = extract_answer(completion, last_number=self.last_number_fallback)
        if got is None:
            return Verdict("fail", False, 0.0, "no final answer found; end with '#### <number>'", reason="no_answer")
        if got == expected:
            return Verdict("pass", True, 1.0, "")
        # Never reveal the reference in feedback: feedback may become a retry prompt.
        return Verdict("fail", False, 0.0, f"final answer {got} is wrong")
