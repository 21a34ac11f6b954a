"""Completions of thinking models: `<think> reasoning </think> answer`. The answer is judged, never the thinking.

    >>> answer_part("<think>6*7... is it 42?</think>\\nThe answer is 42.")
    '\\nThe answer is 42.'
    >>> answer_part("<think>6*7 is... let me count again") is None       # never closed: no answer at all
    True
    >>> answer_part("#### 42")                                             # no think block: all of it
    '#### 42'

The stored completion keeps everything (attempts.completion); only the verifier's view is cut. A think
block that never closes (the model spent its token budget thinking) fails with reason `unclosed_think`,
so a researcher can count it in SQL apart from wrong answers and size `sampling.max_new_tokens`. When a
chat template opens the block in the prompt (Qwen3 with thinking on), the completion starts inside it:
everything before its last `</think>` is thinking all the same.
"""

from __future__ import annotations

from domains.base import Domain, Problem, Verdict

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

UNCLOSED = Verdict(
    "fail",
    False,
    0.0,
    "the reasoning (<think>) never ended, so there is no answer after it",
    reason="unclosed_think",
)


def answer_part(completion: str) -> str | None:
    """What follows the last `</think>`; the whole completion without a think block; None when one opens
    and never closes."""
    if THINK_CLOSE in completion:
        return completion.rsplit(THINK_CLOSE, 1)[1]
    if THINK_OPEN in completion:
        return None
    return completion


def check_answers(domain: Domain, problems: list[Problem], completions: list[str]) -> list[Verdict]:
    """`domain.check_many` on the answer part of each completion; an unclosed think block fails unchecked."""
    parts = [answer_part(c) for c in completions]
    todo = [i for i, part in enumerate(parts) if part is not None]
    checked = domain.check_many([problems[i] for i in todo], [parts[i] or "" for i in todo]) if todo else []
    verdicts = [UNCLOSED] * len(completions)
    for i, verdict in zip(todo, checked):
        verdicts[i] = verdict
    return verdicts
