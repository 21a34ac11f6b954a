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
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

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
