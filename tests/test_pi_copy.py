"""Whether a completion copies the PI of its prompt (`domains.pi_copy`), as verify stores it per attempt
(`attempts.copies_pi`, `attempts.pi_overlap`) and SQL reads it: a code retry that hands back the reference
program, a math retry bent to a given answer, and genuine retries that are not copies."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from attempt_factory import make_attempt

from domains import PrivilegedInfo, get_domain
from domains.numeric import broken_step
from domains.pi_copy import THRESHOLD, overlap, pi_copy
from experiments.config import load_config
from tasks.filter import decide
from tasks.keys import RoundKey
from tasks.verify import verify_rows

ARITH = get_domain("arith")
SEVEN = ARITH.load("train", limit=1)[0]  # "What is 2 * 7?" -> 14
MBPP = get_domain("mbpp")
BELL = next(p for p in MBPP.load("train") if p.problem_id == "mbpp/608")  # nth Bell number
GSM8K = get_domain("gsm8k")
NATALIA = GSM8K.load("train", limit=1)[0]  # 48 clips in April, half as many in May -> 72

# An independent correct program for mbpp/608 (the Bell triangle, row by row): it shares the reference's
# name and little else.
OWN_BELL = """Here is my solution:
```python
def bell_Number(n):
    row = [1]
    for _ in range(n):
        nxt = [row[-1]]
        for x in row:
            nxt.append(nxt[-1] + x)
        row = nxt
    return row[0]
```"""


def test_the_problems_are_the_ones_the_tests_describe():
    assert (SEVEN.question, SEVEN.answer) == ("What is 2 * 7?", "14")
    assert "def bell_Number(n)" in BELL.solution and NATALIA.answer == "72"
    assert NATALIA.solution.strip().endswith("#### 72")


def test_a_code_retry_that_hands_back_the_reference_program_copies_it():
    pi = PrivilegedInfo("correct_answer", MBPP.reference_answer(BELL))
    fenced = f"Sure, here it is:\n```python\n{BELL.solution}\n```\nThis computes the Bell triangle."
    assert pi_copy(MBPP, BELL, pi, fenced).copies and pi_copy(MBPP, BELL, pi, fenced).overlap == 1.0
    # Reindented, respaced, one line changed: still a copy (spacing does not count, an edit costs 8 n-grams).
    reformatted = "\n".join(" ".join(line.split()) for line in BELL.solution.splitlines())
    edited = reformatted.replace("return bell[n][0]", "return int(bell[n][0])")
    found = pi_copy(MBPP, BELL, pi, f"```python\n{edited}\n```")
    assert found.copies and THRESHOLD <= found.overlap < 1.0
    # So is reference_solution, the same program under another kind.
    assert pi_copy(MBPP, BELL, PrivilegedInfo("reference_solution", BELL.solution), fenced).copies


def test_a_code_retry_that_writes_its_own_program_is_not_a_copy():
    pi = PrivilegedInfo("correct_answer", MBPP.reference_answer(BELL))
    found = pi_copy(MBPP, BELL, pi, OWN_BELL)
    assert not found.copies and found.overlap < 0.2


def test_a_math_retry_that_takes_a_wrong_answer_hint_is_bent_to_it():
    wrong = PrivilegedInfo("wrong_answer", "16")
    assert pi_copy(ARITH, SEVEN, wrong, " 2*7=16. #### 16").copies  # the given answer, by a step that fails
    assert pi_copy(ARITH, SEVEN, wrong, " The hint says 16. #### 16").copies  # or no step at all
    assert not pi_copy(ARITH, SEVEN, wrong, " 2*7=14. #### 14").copies  # its own (right) answer
    assert not pi_copy(ARITH, SEVEN, wrong, " 2*7=15. #### 15").copies  # wrong, but not the hint's
    assert not pi_copy(ARITH, SEVEN, wrong, " I do not know.").copies  # no answer at all


def test_a_given_correct_answer_counts_as_copied_only_when_a_step_is_bent_to_reach_it():
    right = PrivilegedInfo("correct_answer", "14")
    genuine = pi_copy(ARITH, SEVEN, right, " 2*7=14. #### 14")
    assert genuine.copies is False and genuine.overlap is None  # a bare answer is too short to overlap
    assert pi_copy(ARITH, SEVEN, right, " 2*8=14. #### 14").copies  # a right step bent to the answer
    assert pi_copy(ARITH, SEVEN, right, " 2*7=14. 14+0=15. #### 14").copies  # any step that fails on the way


def test_a_reference_solution_copied_or_bent_is_a_copy_and_a_derivation_of_ones_own_is_not():
    pi = PrivilegedInfo("reference_solution", NATALIA.solution.strip())
    copied = pi_copy(GSM8K, NATALIA, pi, NATALIA.solution)
    assert copied.copies and copied.overlap == 1.0
    own = "In May she sold half of 48, which is 48 / 2 = 24 clips. Together: 48 + 24 = 72 clips.\n#### 72"
    assert not pi_copy(GSM8K, NATALIA, pi, own).copies and pi_copy(GSM8K, NATALIA, pi, own).overlap < THRESHOLD
    bent = "In May she sold 48 / 2 = 20 clips. Together: 48 + 20 = 72 clips.\n#### 72"
    assert pi_copy(GSM8K, NATALIA, pi, bent).copies


def test_the_models_own_text_and_the_checkers_feedback_are_never_copies():
    failed = " 2*7=16. So the product of two and seven is 16. #### 16"
    mine = PrivilegedInfo("previous_attempt", failed.strip())
    again = pi_copy(ARITH, SEVEN, mine, " 2*7=14. So the product of two and seven is 14. #### 14")
    assert not again.copies and again.overlap > 0  # measured all the same
    feedback = PrivilegedInfo("verifier_feedback", "final answer 16 is wrong")
    assert not pi_copy(ARITH, SEVEN, feedback, " final answer 16 is wrong, so 2*7=14. #### 14").copies
    assert not pi_copy(ARITH, SEVEN, PrivilegedInfo("none", ""), " 2*7=14. #### 14").copies


def test_a_thinking_models_answer_is_read_after_its_thinking():
    wrong = PrivilegedInfo("wrong_answer", "16")
    assert not pi_copy(ARITH, SEVEN, wrong, "<think>the hint says 16, but 2*7=14</think> #### 14").copies
    assert not pi_copy(ARITH, SEVEN, wrong, "<think>the hint says #### 16").copies  # never closed: no answer


def test_overlap_is_the_share_of_the_pis_ngrams_repeated():
    assert overlap("short", "short") is None  # under 8 tokens: no n-grams to compare
    text = "a b c d e f g h i j"  # 3 distinct 8-grams
    assert overlap(text, "A  B c d e f g h") == pytest.approx(1 / 3)  # case and spacing do not count
    assert overlap(text, text.upper()) == 1.0


@pytest.mark.parametrize(
    ("completion", "step"),
    [
        ("16 - 3 - 4 = 9 eggs. 9 * $2 = $18. #### 18", None),
        ("16 - 3 - 4 = 9 eggs. 9 * $3 = $18. #### 18", "9 * $3 = $18"),
        (" 37+48=85. 85-15=72. #### 72", "85-15 = 72"),
        ("Step 1. 5 + 3 = 9", "5 + 3 = 9"),  # the step number is no part of the step
        ("10 / 3 = 3.33 and 7 / 2 = 4", None),  # rounded to the places written
        ("1,234 + 1 = 1,235", None),
        ("(2 + 3) * 4 = 20, and 9 × 2 = 18", None),
        ("20% of 50 = 10; 3 apples + 4 = 7; x = 5; 2, 3 + 4 = 7", None),  # not steps it checks
        ("3 - 5 = 2", "3 - 5 = 2"),
    ],
)
def test_broken_step_finds_arithmetic_that_does_not_hold(completion, step):
    assert broken_step(completion) == step


def _retry(pi: PrivilegedInfo, completion: str, i: int, **kw):
    return make_attempt(
        problem_id=SEVEN.problem_id,
        attempt_id=f"retry-{i}",
        attempt_idx=1,
        parent_id="first-0",
        pi_kind=pi.kind,
        pi_text=pi.text,
        completion=completion,
        **kw,
    )


def _verified_round():
    """A first try and three retries of "What is 2 * 7?" verified as the verify stage does, and an OPSD rollout."""
    first = make_attempt(problem_id=SEVEN.problem_id, attempt_id="first-0", completion=" 2*7=12. #### 12")
    rows = [
        first,
        _retry(PrivilegedInfo("wrong_answer", "16"), " 2*7=16. #### 16", 1),
        _retry(PrivilegedInfo("correct_answer", "14"), " 2*8=14. #### 14", 2),
        _retry(PrivilegedInfo("correct_answer", "14"), " 2*7=14. #### 14", 3),
        make_attempt(
            problem_id=SEVEN.problem_id, attempt_id="opsd-0", phase="opsd", pi_kind="correct_answer", pi_text="14"
        ),
    ]
    return verify_rows(load_config("demo"), {SEVEN.problem_id: SEVEN}, rows)


def test_verify_fills_copies_pi_for_attempts_whose_prompt_carried_pi():
    rows = {a.attempt_id: a for a in _verified_round()}
    assert [(rows[i].passed, rows[i].copies_pi) for i in ("first-0", "retry-1", "retry-2", "retry-3")] == [
        (False, None),  # a first try: no PI
        (False, True),  # took the wrong hint (and failed)
        (True, True),  # passed through a bent step: the given answer, not its own
        (True, False),  # passed on its own steps
    ]
    assert rows["opsd-0"].copies_pi is None and rows["opsd-0"].pi_overlap is None  # only the teacher saw PI


def test_the_filter_rejects_a_passing_copy_unless_told_not_to():
    verified = [a for a in _verified_round() if a.phase == "train"]
    reasons = [a.reject_reason for a in decide(load_config("demo"), verified)]
    assert reasons == ["failed", "failed", "copies_pi", None]  # a verdict's reason comes first
    kept = decide(load_config("demo", ["filter.reject_pi_copies=false"]), verified)
    assert [a.reject_reason for a in kept] == ["failed", "failed", None, None]


def test_a_rejected_copy_takes_no_place_under_the_cap_and_the_dedupe():
    pi = PrivilegedInfo("correct_answer", "14")
    copy = replace(_retry(pi, " 2*7=14. #### 14", 1), status="pass", passed=True, score=1.0, copies_pi=True)
    own = replace(copy, attempt_id="retry-2", copies_pi=False)
    rows = decide(load_config("demo", ["filter.max_per_problem=1"]), [copy, own])
    assert [a.reject_reason for a in rows] == ["copies_pi", None]


def test_copies_land_in_sql_and_the_cookbooks_recipes_count_them(pidistill_home: Path):
    key = RoundKey("run-copies", "retry", 0, 1, str(pidistill_home))
    rows = [replace(a, **key.columns()) for a in _verified_round() if a.phase == "train"]
    key.write("attempts", "train", decide(load_config("demo"), rows))
    from storage.catalog import query

    df = query("""select attempt_id, copies_pi, reject_reason from attempts
                  where run_id = 'run-copies' and copies_pi order by attempt_id""")
    assert df.values.tolist() == [["retry-1", True, "failed"], ["retry-2", True, "copies_pi"]]
    cookbook = (Path(__file__).resolve().parent.parent / "docs" / "sql.md").read_text()
    section = cookbook.split("## Retries that copy their PI")[1].split("\n## ")[0]
    counts, copies = (
        query(sql.replace("<run id>", "run-copies")) for sql in re.findall(r"```sql\n(.*?)```", section, re.S)
    )
    by_kind = counts.set_index("pi_kind")
    assert by_kind.loc["wrong_answer", "copies"] == 1 and by_kind.loc["correct_answer", "rejected_as_copies"] == 1
    assert by_kind.loc["correct_answer", "attempts"] == 2 and by_kind.loc["correct_answer", "passing_copies"] == 1
    assert sorted(copies.problem_id) == [SEVEN.problem_id] * 2
