"""Privileged information (PI): what a retry prompt or the OPSD teacher sees and a training prompt never does.

One kind per experiment knob (`retry.feedback`, `train.opsd.pi`), stored as `pi_kind`/`pi_text`:

    none               "Your previous answer was wrong. Try again."
    correct_answer     the reference answer (math: the number; code: the reference program)
    wrong_answer       a plausible wrong answer (math: the answer perturbed; else another problem's answer)
    gibberish          random letters, as long as the correct answer's text (seeded)
    previous_attempt   the failed completion itself
    verifier_feedback  the verdict's feedback (failing test, type-checker error)
    self_diagnosis     the model's own diagnosis of the failure, sampled first
    skeleton           the `have` skeleton of a reference proof (Lean)
    reference_solution the full reference solution

    >>> d = get_domain("arith"); pool = d.load("train", limit=20)   # pool[0]: "What is 2 * 7?" -> 14
    >>> pi = make_pi("wrong_answer", d, pool[0], pool, random.Random(0))
    >>> pi_section(pi)
    'Your previous answer was wrong. Hint: the final answer might be 16. Try again.'

What a domain must supply for a kind (`reference_answer`, `wrong_answer`,
`skeleton`) is a method of `domains.base.BaseDomain`; a domain that cannot
supply it raises `PIUnavailable`, which preflight turns into a config error.
Whether a completion copies the PI of its prompt is `domains.pi_copy`.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:  # domains.base imports this module: types only, no cycle
    from domains.base import Domain, Problem

PIKind = Literal[
    "none",
    "correct_answer",
    "wrong_answer",
    "gibberish",
    "previous_attempt",
    "verifier_feedback",
    "self_diagnosis",
    "skeleton",
    "reference_solution",
]
PI_KINDS: tuple[str, ...] = get_args(PIKind)
# Kinds made from the problem's own reference (answer, solution, proof; gibberish: as long as the answer),
# which a dataset may hold for some problems only (minif2f: a file of reference proofs).
FROM_REFERENCE = frozenset({"correct_answer", "gibberish", "skeleton", "reference_solution"})

DIAGNOSIS_CUE = "\nThe attempt above is wrong. In one or two sentences, what went wrong?\nDiagnosis:"


class PIUnavailable(ValueError):
    """This domain cannot supply this kind of privileged information."""


@dataclass(frozen=True)
class PrivilegedInfo:
    """Extra information shown in a prompt but never in a training prompt.

    kind is one of `PI_KINDS`; text is what the prompt carries.
    """

    kind: str
    text: str = ""


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


def wrong_answer(domain: Domain, problem: Problem, pool: list[Problem], rng: random.Random) -> str:
    """Plausible but wrong: the domain's own perturbation, else another problem's reference answer."""
    own = domain.wrong_answer(problem, rng)
    if own is not None:
        return own
    right = domain.reference_answer(problem)
    others = [a for p in pool if p.problem_id != problem.problem_id and (a := domain.reference_answer(p)) != right]
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
    kind: str,
    domain: Domain,
    problem: Problem,
    pool: list[Problem],
    rng: random.Random,
    *,
    completion: str = "",
    feedback: str | None = "",
    diagnosis: str | None = None,
) -> PrivilegedInfo:
    """The PI of `kind` for a failed `completion` of `problem` (whose verdict said `feedback`).

    `pool` supplies other problems' answers (wrong_answer's fallback); `rng` seeds
    wrong_answer and gibberish. Raises PIUnavailable when the domain cannot supply `kind`."""
    if kind == "none":
        return PrivilegedInfo("none", "")
    if kind == "correct_answer":
        return PrivilegedInfo(kind, domain.reference_answer(problem))
    if kind == "wrong_answer":
        return PrivilegedInfo(kind, wrong_answer(domain, problem, pool, rng))
    if kind == "gibberish":
        return PrivilegedInfo(kind, gibberish(len(domain.reference_answer(problem)), rng))
    if kind == "previous_attempt":
        return PrivilegedInfo(kind, completion.strip() or "(empty)")
    if kind == "verifier_feedback":
        return PrivilegedInfo(kind, (feedback or "").strip() or "(the checker gave no detail)")
    if kind == "self_diagnosis":
        return PrivilegedInfo(kind, (diagnosis or "").strip() or "(no diagnosis)")
    if kind == "skeleton":
        return PrivilegedInfo(kind, domain.skeleton(problem))
    if kind == "reference_solution":
        if not problem.solution:
            raise PIUnavailable(f"{domain.name} has no reference solution for {problem.problem_id}")
        return PrivilegedInfo(kind, problem.solution.strip())
    raise PIUnavailable(f"unknown pi kind {kind!r}")


def diagnosis_prompt(domain: Domain, problem: Problem, completion: str) -> str:
    """What the model is asked, before a self_diagnosis retry, about its failed `completion`."""
    return f"{domain.prompt(problem)}{completion}{DIAGNOSIS_CUE}"


# ---------------------------------------------------------------- chat models
#
# A chat model gets the same information as a base model, as turns. Kinds that are about the failed
# attempt itself show it as the model's own (assistant) turn, and the PI as the user's reply to it:
#
#     previous_attempt   user: problem | assistant: failed attempt | user: "That is wrong. Try again."
#     verifier_feedback  user: problem | assistant: failed attempt | user: "... The checker said: <feedback> ..."
#     self_diagnosis     user: problem | assistant: failed attempt | user: "... What went wrong: <diagnosis> ..."
#
# Every other kind (none, correct_answer, wrong_answer, gibberish, skeleton, reference_solution) is one user
# turn: the problem, then the PI block, as in the plain prompt. The base prompt of those kinds does not show
# the failed attempt either (the double-sample control differs from a fresh sample only by "wrong"), and
# templates such as Mistral's refuse two user turns in a row. The OPSD teacher is always one user turn with
# the PI block: it has no failed attempt of its own. Training prompts are the first user turn alone.

IN_CONVERSATION = frozenset({"previous_attempt", "verifier_feedback", "self_diagnosis"})

CHAT_PI_TURNS: dict[str, str] = {
    "previous_attempt": "That is wrong. Try again.",
    "verifier_feedback": "That is wrong. The checker said:\n{text}\nTry again.",
    "self_diagnosis": "That is wrong. What went wrong:\n{text}\nTry again.",
}

CHAT_DIAGNOSIS_TURN = "That is wrong. In one or two sentences, what went wrong?"


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def chat_pi_turn(pi: PrivilegedInfo) -> str:
    """The user turn that answers a failed attempt shown as the assistant's turn (kinds in IN_CONVERSATION)."""
    return CHAT_PI_TURNS[pi.kind].format(text=pi.text.strip())


def pi_blocks(pi: PrivilegedInfo) -> tuple[str, ...]:
    """Every text by which `pi` appears in a prompt, plain or chat: what the PI-leak guard looks for."""
    blocks = [pi_section(pi)]
    if pi.kind in IN_CONVERSATION:
        blocks.append(chat_pi_turn(pi))
    return tuple(b for b in blocks if b)


def first_messages(domain: Domain, problem: Problem, pi: PrivilegedInfo | None = None) -> tuple[dict[str, str], ...]:
    """A first try (or, with `pi`, the OPSD teacher's prompt) as a conversation: one user turn."""
    return (user(domain.user_turn(problem, pi)),)


def follow_up_messages(
    domain: Domain, problem: Problem, pi: PrivilegedInfo, completion: str
) -> tuple[dict[str, str], ...]:
    """A retry after the failed `completion`, as a conversation (see the table above)."""
    if pi.kind in IN_CONVERSATION:
        return (user(domain.user_turn(problem)), assistant(completion), user(chat_pi_turn(pi)))
    return first_messages(domain, problem, pi)


def diagnosis_messages(domain: Domain, problem: Problem, completion: str) -> tuple[dict[str, str], ...]:
    """The self_diagnosis question about a failed `completion`, as a conversation."""
    return (user(domain.user_turn(problem)), assistant(completion), user(CHAT_DIAGNOSIS_TURN))
