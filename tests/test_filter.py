"""The filter stage's decisions and its PI-leak guard (pure functions; a tokenizer renders training prompts)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from attempt_factory import make_attempt
from transformers import AutoTokenizer

from domains import PrivilegedInfo, get_domain
from domains.pi import pi_section
from experiments.config import load_config
from tasks.filter import PILeak, assert_no_pi, decide, pass_rate, sft_examples
from tasks.keys import RoundKey


def _row(pid: str, i: int, passed: bool, completion: str = None, status: str = None, score: float = None, **kw):
    return make_attempt(
        problem_id=pid,
        attempt_id=f"{pid}-{i}",
        completion=completion or f"c{i}",
        passed=passed,
        status=status or ("pass" if passed else "fail"),
        score=score if score is not None else float(passed),
        **kw,
    )


def _reasons(rows):
    return [r.reject_reason for r in rows]


def test_a_completion_with_no_answer_is_rejected_as_no_answer_not_as_wrong():
    """Issue 16: countable in SQL (`reject_reason = 'no_answer'`), apart from wrong answers."""
    problem = get_domain("arith").load("train", limit=1)[0]
    verdict = get_domain("arith").check(problem, "I think it is quite big.")
    rows = decide(
        load_config("demo"),
        [_row("p", 0, False).with_verdict(verdict), _row("p", 1, False), _row("q", 0, True)],
    )
    assert _reasons(rows) == ["no_answer", "failed", None]


def test_binary_accepts_passing_and_names_each_rejection():
    cfg = load_config("demo")
    rows = decide(
        cfg,
        [
            _row("p", 0, True),
            _row("p", 1, False),
            _row("p", 2, False, status="error"),
            _row("p", 3, False, status="timeout"),
            _row("p", 4, True, completion="c0"),
        ],
    )
    assert [r.accepted for r in rows] == [True, False, False, False, False]
    assert _reasons(rows) == [None, "failed", "verifier_error", "timeout", "duplicate"]


def test_graded_uses_the_threshold():
    cfg = load_config("demo", ["verify.mode=graded", "verify.threshold=0.5"])
    rows = decide(cfg, [_row("p", 0, False, score=0.6), _row("p", 1, False, score=0.4), _row("p", 2, True)])
    assert _reasons(rows) == [None, "below_threshold", None]


def test_frontier_keeps_only_problems_strictly_inside_the_bounds():
    cfg = load_config("demo", ["filter.frontier=true"])
    easy = [_row("easy", i, True) for i in range(4)]
    mid = [_row("mid", 0, True), _row("mid", 1, False)]
    rows = decide(cfg, easy + mid)
    assert _reasons(rows) == ["frontier_too_easy"] * 4 + [None, "failed"]
    cfg = load_config("demo", ["filter.frontier=true", "filter.frontier_high=0.4"])
    assert _reasons(decide(cfg, mid)) == ["frontier_too_easy", "failed"]


def test_frontier_pass_rates_count_first_tries_so_a_problem_only_retries_solved_is_too_hard():
    """Audit: a retry sees PI and only failures get one, so counting retries in the rate kept exactly the
    problems only retries solved (rate 1/5 here) inside the frontier as if the model half-solved them."""
    only_retries = [_row("hard", i, False) for i in range(4)] + [
        _row("hard", 4, True, attempt_idx=1, parent_id="hard-0", pi_kind="none", pi_text="")
    ]
    half = [_row("mid", 0, True), _row("mid", 1, False), _row("mid", 2, True, attempt_idx=1, parent_id="mid-1")]
    cfg = load_config("demo", ["filter.frontier=true"])
    assert cfg.filter.frontier_pass_rate_from == "first_tries"
    assert pass_rate(only_retries) == 0.0 and pass_rate(half) == 0.5
    assert _reasons(decide(cfg, only_retries + half)) == ["failed"] * 4 + ["frontier_too_hard", None, "failed", None]
    every = load_config("demo", ["filter.frontier=true", "filter.frontier_pass_rate_from=all_attempts"])
    assert pass_rate(only_retries, "all_attempts") == 0.2
    assert _reasons(decide(every, only_retries)) == ["failed"] * 4 + [None]  # as before the setting existed
    # A retry passing on a problem whose first tries all passed would be too easy either way.
    easy = [_row("easy", 0, True), _row("easy", 1, True)]
    assert _reasons(decide(cfg, easy)) == ["frontier_too_easy"] * 2


def test_max_per_problem_caps_accepted():
    cfg = load_config("demo", ["filter.max_per_problem=2"])
    rows = decide(cfg, [_row("p", i, True) for i in range(4)])
    assert _reasons(rows) == [None, None, "max_per_problem", "max_per_problem"]


def test_sft_examples_use_the_original_prompt_and_the_guard_catches_leaks(smollm2):
    cfg = load_config("demo", ["model.chat=off"])  # plain text (the chat form: tests/test_chat.py)
    d = get_domain("arith")
    p = d.load("train", 1)[0]
    pi = PrivilegedInfo("correct_answer", p.answer)
    retry = replace(_row(p.problem_id, 1, True), pi_kind=pi.kind, pi_text=pi.text, prompt=d.prompt(p, pi))
    rows = decide(cfg, [retry])
    key = RoundKey("r", "a", 0, 1, "/tmp")
    examples = sft_examples(cfg, key, {p.problem_id: p}, rows, AutoTokenizer.from_pretrained(smollm2))
    assert examples[0]["prompt"] == d.prompt(p)
    assert_no_pi(examples, rows)  # clean
    leaked = [{**examples[0], "prompt": d.prompt(p, pi)}]
    with pytest.raises(PILeak, match="carries privileged information"):
        assert_no_pi(leaked, rows)
    assert pi_section(pi) in leaked[0]["prompt"]
