"""Math domains: arith generation and splits, GSM8K loading, answer extraction and checking."""

from __future__ import annotations

import json
import re

import pytest

from domains import DomainError, PrivilegedInfo, Verdict, get_domain, safe_check
from domains.numeric import extract_answer, normalize_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#### 18", "18"),
        ("so 3 + 4 = 7\n#### $1,234.50 dollars", "1234.5"),
        ("#### 72 clips", "72"),
        ("The answer is $5.", "5"),
        ("The answer is: -3", "-3"),
        ("first 12 then 15 eggs", None),  # a number in passing is no answer (last_number_fallback: off)
        ("#### 0.50", "0.5"),
        ("#### 12.0", "12"),
        ("no numbers here", None),
        ("so the total is \\boxed{42}.", "42"),  # Qwen / DeepSeek math format
        ("\\boxed{1} at first, then \\boxed{$1,234}", "1234"),  # the last box counts
        ("#### 5 (not \\boxed{6})", "5"),  # #### first
        ("#### ", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_only_the_answer_format_counts_unless_the_fallback_is_named():
    """Issue 16: 'There is a difference between 1 and 0...' passed '1 - 1' by its last number."""
    assert extract_answer("first 12 then 15 eggs", last_number=True) == "15"
    chatty = "There is a difference between 1 and 0, so it is hard to say."
    problem = next(p for p in get_domain("arith").load("train", limit=500) if p.answer == "0")
    strict = get_domain("arith").check(problem, chatty)
    assert (strict.status, strict.reason) == ("fail", "no_answer")
    assert get_domain("arith", last_number_fallback=True).check(problem, chatty).passed
    assert get_domain("arith").check(problem, " so #### 0").passed
    assert get_domain("arith").check(problem, "The answer is: 0").passed
    assert get_domain("arith").check(problem, "#### 7").reason is None  # a wrong answer is just a fail


def test_normalize_number():
    assert normalize_number("$1,000") == "1000"
    assert normalize_number("abc") is None


def test_arith_is_seeded_unlimited_and_disjoint():
    d = get_domain("arith")
    a, b = d.load("train", limit=500), d.load("train", limit=500)
    assert [p.problem_id for p in a] == [p.problem_id for p in b]
    test = d.load("test", limit=500)
    assert not {p.problem_id for p in a} & {p.problem_id for p in test}
    assert len({p.problem_id for p in d.load("train", limit=3000)}) == 3000
    assert get_domain("arith", seed=1).load("test", 5) != get_domain("arith").load("test", 5)


def test_arith_gold_passes_and_perturbed_fails():
    d = get_domain("arith")
    for p in d.load("test", limit=300):
        assert d.check(p, p.solution).passed, p
        wrong = p.solution.rsplit("####", 1)[0] + f"#### {int(p.answer) + 1}"
        v = d.check(p, wrong)
        assert v.status == "fail" and not v.passed
        assert p.answer not in v.feedback.split()  # feedback never reveals the reference


def test_arith_values_are_right():
    d = get_domain("arith")
    for p in d.load("train", limit=300):
        expr = re.match(r"What is (.*)\?", p.question).group(1)
        assert eval(expr) == int(p.answer)
        assert int(p.answer) >= 0


def test_arith_rejects_a_path_and_bad_split():
    with pytest.raises(ValueError, match="reads no file"):
        get_domain("arith", path="x.jsonl")
    with pytest.raises(ValueError, match="not 'valid'"):
        get_domain("arith").load("valid")


def test_arith_says_when_a_setting_has_fewer_problems_than_asked(pidistill_home):
    """A small setting once looped forever (issue 16); now a clear error names the setting and the sizes."""
    small = get_domain("arith", max_ops=1, max_operand=3)
    n = small.available("train", 10_000)
    assert 0 < n < 100 and len(small.load("train", limit=n)) == n
    with pytest.raises(DomainError, match=rf"max_operand=3 has only {n} distinct train problems, {n + 1} were"):
        small.load("train", limit=n + 1)
    from experiments.config import load_config
    from tasks.runs import PreflightError, preflight

    cfg = load_config(
        "demo", ["domain.options={max_ops: 1, max_operand: 3}", "domain.train_size=8", "domain.eval_size=500"]
    )
    with pytest.raises(PreflightError, match="distinct test problems, 500 were asked for.*domain.eval_size"):
        preflight(cfg)


def test_gsm8k_gold_answers_all_pass(data_dir):
    d = get_domain("gsm8k")
    problems = d.load("train") + d.load("test")
    assert len(problems) == 7473 - 2 + 1121  # less the training copies of a test problem (decontamination)
    failures = [p.problem_id for p in problems if not d.check(p, p.solution).passed]
    assert failures == []


def test_gsm8k_perturbed_answers_fail(data_dir):
    d = get_domain("gsm8k")
    for p in d.load("test", limit=200):
        wrong = p.solution.rsplit("####", 1)[0] + f"#### {float(p.answer) + 1:g}"
        assert d.check(p, wrong).status == "fail"
        assert d.check(p, "I don't know").status == "fail"


def test_gsm8k_path_file_is_one_split_used_as_is(tmp_path, data_dir):
    rows = (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:7]
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(rows) + "\n")
    d = get_domain("gsm8k", path=str(f))
    assert len(d.load("train")) == 7 and len(d.load("test")) == 7
    assert d.data_hash() != get_domain("gsm8k").data_hash()


def test_gsm8k_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(DomainError, match="not found"):
        get_domain("gsm8k", path=str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DomainError, match=r"bad.jsonl:1: not a gsm8k row"):
        get_domain("gsm8k", path=str(bad)).load("test")
    noanswer = tmp_path / "noanswer.jsonl"
    noanswer.write_text(json.dumps({"question": "q", "answer": "no final line"}) + "\n")
    with pytest.raises(DomainError, match="no '#### <number>'"):
        get_domain("gsm8k", path=str(noanswer)).load("test")


def test_prompt_with_pi_shows_it_and_without_does_not():
    d = get_domain("arith")
    p = d.load("test", 1)[0]
    plain = d.prompt(p)
    with_pi = d.prompt(p, PrivilegedInfo("correct_answer", p.answer))
    assert plain.endswith("Answer:") and with_pi.endswith("Answer:")
    assert "correct final answer is" in with_pi and "correct final answer" not in plain
    with pytest.raises(ValueError, match="unknown pi kind"):
        d.prompt(p, PrivilegedInfo("telepathy", "x"))


def test_unknown_domain():
    with pytest.raises(DomainError, match="unknown domain 'nope'"):
        get_domain("nope")


def test_verifier_crash_is_an_error_verdict():
    class Broken:
        def check(self, problem, completion):
            raise ZeroDivisionError("bug in checker")

    p = get_domain("arith").load("test", 1)[0]
    v = safe_check(Broken(), p, "x")
    assert v.status == "error" and not v.passed and "ZeroDivisionError" in v.feedback


def test_verdict_validates():
    with pytest.raises(ValueError):
        Verdict("pass", True, 1.5)
    with pytest.raises(ValueError):
        Verdict("fail", True, 1.0)
    with pytest.raises(ValueError):
        Verdict("maybe", False, 0.0)  # type: ignore[arg-type]
