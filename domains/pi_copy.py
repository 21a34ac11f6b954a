"""Does a completion copy the privileged information (PI) of its own prompt?

A retry that hands its hint back is not the model's own work, yet an accepted one trains on the
original prompt as if it were. Verify measures every attempt whose prompt carried PI
(`attempts.copies_pi`, `attempts.pi_overlap`); the filter rejects copies as `copies_pi`
(`filter.reject_pi_copies`).

    >>> d = get_domain("arith"); p = ...                                    # "What is 2 * 7?" -> 14
    >>> pi_copy(d, p, PrivilegedInfo("wrong_answer", "16"), " 2*7=16. #### 16")
    PICopy(copies=True, overlap=None)       # took the wrong answer it was given
    >>> pi_copy(d, p, PrivilegedInfo("correct_answer", "14"), " 2*7=14. #### 14")
    PICopy(copies=False, overlap=None)      # the given answer, reached by steps that hold
    >>> pi_copy(d, p, PrivilegedInfo("correct_answer", "14"), " 2*8=14. #### 14")
    PICopy(copies=True, overlap=None)       # bent: a step that does not hold lands on the given answer
    >>> pi_copy(mbpp, q, PrivilegedInfo("correct_answer", q.solution), f"```python\\n{q.solution}```")
    PICopy(copies=True, overlap=1.0)        # the reference program, handed over and handed back

A completion copies its PI when the PI hands over a solution or an answer, and

- verbatim (kinds in `SOLUTIONS`: correct_answer, which in code and Lean is the reference program or
  proof, and reference_solution): the completion repeats at least `THRESHOLD` of the PI's distinct token
  `N`-grams (`overlap`; tokens normalized as decontamination does: case, spacing and prose punctuation
  do not count); or
- answer (kinds in `ANSWERS`, domains judged by one final answer: arith, gsm8k): its final answer is one
  the PI gave, and the PI gave it as wrong (wrong_answer), or the completion gets there through a step that
  does not hold (`Domain.broken_step`: '9 * 3 = 18'): a right step bent to reach the given answer. The
  given answer reached by steps that all hold is the model's own derivation (STaR's rationalization).

Not copies, whatever their overlap: a PI of the model's own (previous_attempt, self_diagnosis: repeating
oneself is one's own work), the checker's feedback, gibberish, and a Lean `skeleton` (an outline the prompt
asks the proof to follow; its bodies are `sorry`, so a passing proof wrote them). `overlap` is measured for
every PI of at least N tokens all the same, and is None for a shorter one (a bare answer).

What it does not catch: a copy with its names changed throughout (few 8-grams survive), a paraphrased
reference solution, a step bent in words rather than in arithmetic ('so she has eighteen').
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from domains.base import Domain, Problem
from domains.decontam import tokens
from domains.pi import PrivilegedInfo
from domains.thinking import answer_part

# Token 8-grams, as decontamination: long enough that two independent programs or solutions share few
# (an MBPP reference and another correct program share their `def` line and little else), short enough
# that a 10-token program still has some.
N = 8
# Half of the PI's 8-grams repeated: a copy with a few edits keeps more (each edit costs at most 8), while an
# independent solution of the same problem shares a handful.
THRESHOLD = 0.5

SOLUTIONS = frozenset({"correct_answer", "reference_solution"})
ANSWERS = frozenset({"correct_answer", "wrong_answer", "reference_solution"})


@dataclass(frozen=True)
class PICopy:
    """`copies`: the completion copies its PI (see the module docstring); `overlap`: the share of the PI's
    token N-grams the completion repeats verbatim (None: a PI shorter than N tokens)."""

    copies: bool
    overlap: float | None


def overlap(pi_text: str, completion: str, n: int = N) -> float | None:
    """The share of `pi_text`'s distinct token n-grams that occur in `completion`; None when it has none."""
    given = _grams(tokens(pi_text), n)
    if not given:
        return None
    return len(given & _grams(tokens(completion), n)) / len(given)


def _grams(toks: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return set(zip(*(toks[i:] for i in range(n))))


def given_answers(domain: Domain, problem: Problem, pi: PrivilegedInfo) -> set[str]:
    """The final answers `pi` states, in `domain.final_answer`'s form (none for a kind that states none)."""
    if pi.kind == "reference_solution":
        found = domain.final_answer(problem, pi.text)
    elif pi.kind in ANSWERS:
        found = domain.normalize_answer(pi.text)
    else:
        found = None
    return {found} if found is not None else set()


def pi_copy(domain: Domain, problem: Problem, pi: PrivilegedInfo, completion: str) -> PICopy:
    """Whether `completion`, sampled from a prompt carrying `pi`, copies it (see the module docstring)."""
    share = overlap(pi.text, completion)
    if pi.kind in SOLUTIONS and share is not None and share >= THRESHOLD:
        return PICopy(True, share)
    answer_text = answer_part(completion)
    if answer_text is None or pi.kind not in ANSWERS:
        return PICopy(False, share)
    answer = domain.final_answer(problem, answer_text)
    if answer is None or answer not in given_answers(domain, problem, pi):
        return PICopy(False, share)
    bent = pi.kind == "wrong_answer" or domain.broken_step(answer_text) is not None
    return PICopy(bent, share)
