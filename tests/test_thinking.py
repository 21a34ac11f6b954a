"""Thinking models: the verifier judges what follows </think>; the stored completion keeps the thinking; a think
block that never closes is its own reject reason (issue 16)."""

from __future__ import annotations

from attempt_factory import make_attempt

from domains import get_domain
from domains.thinking import answer_part, check_answers
from experiments.config import load_config
from tasks.filter import decide
from tasks.verify import verify_rows

ARITH = get_domain("arith")


def _problem():
    return next(p for p in ARITH.load("train", limit=200) if p.answer == "42")


def test_the_answer_is_read_after_the_thinking_and_never_from_it():
    p = _problem()
    right = "<think>is it #### 41? no, 6*7</think>\n#### 42"
    wrong = "<think>#### 42 would be right</think>\n#### 41"
    inside = "6*7 is... hmm</think>#### 42"  # the template opened the block in the prompt
    verdicts = check_answers(ARITH, [p, p, p], [right, wrong, inside])
    assert [v.passed for v in verdicts] == [True, False, True]
    assert answer_part("<think>never ends #### 42") is None


def test_an_unclosed_think_block_fails_with_its_own_reason_and_keeps_its_text():
    p = _problem()
    cfg = load_config("demo")
    text = "<think>6*7 is 42 so #### 42 but let me check again and again"
    attempts = [make_attempt(problem_id=p.problem_id, attempt_id="a", completion=text)]
    [verified] = verify_rows(cfg, {p.problem_id: p}, attempts)
    assert (verified.status, verified.fail_reason, verified.completion) == ("fail", "unclosed_think", text)
    assert decide(cfg, [verified])[0].reject_reason == "unclosed_think"
