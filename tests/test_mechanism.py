"""Why an arm moved (analysis/mechanism.py), on hand-written attempts and evaluations whose counts are known
(fast, no model): acceptance by follow-up level, examples from newly vs already solved problems, answer format
vs answer, and held-out flips; then the same tables in a report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from attempt_factory import make_attempt

from analysis import mechanism
from storage.writer import write_rows

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _train(arm: str, problem: str, idx: int, passed: bool, accepted: bool, parent: str | None = None, n: int = 0):
    return make_attempt(
        run_id="m",
        arm=arm,
        problem_id=problem,
        attempt_id=f"{arm}-{problem}-{idx}-{n}",
        parent_id=parent,
        attempt_idx=idx,
        sample_idx=n,
        passed=passed,
        status="pass" if passed else "fail",
        accepted=accepted,
        reject_reason=None if accepted else ("duplicate" if passed else "failed"),
        fail_reason=None if passed else "wrong_answer",
    )


def _eval(arm: str, rnd: int, problem: str, passed: bool, answered: bool = True):
    return make_attempt(
        run_id="m",
        arm=arm,
        round=rnd,
        phase="eval",
        problem_id=problem,
        attempt_id=f"e-{arm}-{rnd}-{problem}",
        passed=passed,
        status="pass" if passed else "fail",
        fail_reason=None if passed else ("wrong_answer" if answered else "no_answer"),
    )


def _write(home: Path) -> None:
    """Arm `retry`: p1 solved by a first try (2 passes, 1 accepted: a duplicate), p2 failed first and solved by
    its second follow-up, p3 never. Arm `plain`: p1 solved, p2 and p3 not. Held-out q1..q4 at rounds 0 and 1."""
    a = [
        _train("retry", "p1", 0, True, True),
        _train("retry", "p1", 0, True, False, n=1),
        _train("retry", "p2", 0, False, False),
        _train("retry", "p2", 1, False, False, parent="retry-p2-0-0"),
        _train("retry", "p2", 2, True, True, parent="retry-p2-1-0"),
        _train("retry", "p3", 0, False, False),
        _train("retry", "p3", 1, False, False, parent="retry-p3-0-0"),
        _train("plain", "p1", 0, True, True),
        _train("plain", "p2", 0, False, False),
        _train("plain", "p3", 0, False, False),
    ]
    # Round 0: q1 passes, q2 fails with an answer, q3 and q4 have none. Round 1: `retry` gains q3 and q4 (both
    # now answered) and loses q1; `plain` learns the format on q3 (answered, still wrong).
    e = [_eval(arm, 0, "q1", True) for arm in ("retry", "plain")]
    e += [_eval(arm, 0, "q2", False) for arm in ("retry", "plain")]
    e += [_eval(arm, 0, q, False, answered=False) for arm in ("retry", "plain") for q in ("q3", "q4")]
    e += [_eval("retry", 1, "q1", False), _eval("retry", 1, "q2", False)]
    e += [_eval("retry", 1, "q3", True), _eval("retry", 1, "q4", True)]
    e += [_eval("plain", 1, "q1", True), _eval("plain", 1, "q2", False), _eval("plain", 1, "q3", False)]
    e += [_eval("plain", 1, "q4", False, answered=False)]
    write_rows(home / "m" / "attempts" / "a.parquet", [x.to_row() for x in a + e], "attempts")
    evaluations = [
        {"run_id": "m", "arm": x.arm, "seed": 0, "round": x.round, "problem_id": x.problem_id, "model_ref": "m"}
        | {"n": 1, "n_pass": int(bool(x.passed))}
        for x in e
    ]
    write_rows(home / "m" / "evaluations" / "e.parquet", evaluations, "evaluations")


def test_acceptance_by_level_counts_each_follow_up_level(pidistill_home):
    _write(pidistill_home)
    levels = mechanism.acceptance_by_level("m")
    rows = {(r.arm, r.level): (r.attempts, r.passed, r.accepted) for r in levels.itertuples()}
    assert rows == {
        ("plain", 0): (3, 1, 1),
        ("retry", 0): (4, 2, 1),
        ("retry", 1): (2, 0, 0),
        ("retry", 2): (1, 1, 1),
    }


def test_examples_come_from_problems_a_first_try_solved_or_only_a_follow_up_did(pidistill_home):
    _write(pidistill_home)
    s = mechanism.examples_by_problem("m").set_index("arm")
    assert s.loc["retry"].to_dict() == {
        "problems": 3,
        "solved_by_a_first_try": 1,
        "newly_solved": 1,
        "examples_already_solved": 1,
        "examples_newly_solved": 1,
        "examples": 2,
    }
    assert (s.loc["plain", "newly_solved"], s.loc["plain", "examples_newly_solved"]) == (0, 0)


def test_format_is_told_from_the_answer(pidistill_home):
    _write(pidistill_home)
    f = mechanism.format_or_answer("m").set_index(["arm", "round"])
    assert f.loc[("plain", 0)].answered == 0.5 and f.loc[("plain", 0)].pass1_when_answered == 0.5
    # plain: answered rose to 3/4 and pass@1 stayed at 1/4: format learnt, no arithmetic
    assert f.loc[("plain", 1)].answered == 0.75 and f.loc[("plain", 1)].pass1 == 0.25
    assert f.loc[("plain", 1)].pass1_when_answered == 1 / 3
    assert f.loc[("retry", 1)].answered == 1.0 and f.loc[("retry", 1)].pass1 == 0.5


def test_eval_flips_add_up_to_the_arms_delta(pidistill_home):
    _write(pidistill_home)
    flips = mechanism.eval_flips("m").set_index("arm")
    assert flips.loc["retry"].to_dict() == {"pairs": 4, "gained": 2, "lost": 1, "kept": 0, "never": 1}
    assert flips.loc["plain"].to_dict() == {"pairs": 4, "gained": 0, "lost": 0, "kept": 1, "never": 3}


def test_the_report_shows_why(pidistill_home):
    from analysis.report import build_report, format_table, to_markdown

    _write(pidistill_home)
    config = {"arms": [{"name": "plain"}, {"name": "retry"}], "domain": {"name": "arith"}, "seed_result": ""}
    run = {"run_id": "m", "experiment": "x", "config_json": json.dumps(config), "config_hash": "h"}
    run |= {"code_version": "c", "data_hash": "d", "started_at": T0, "finished_at": T0, "status": "completed"}
    write_rows(pidistill_home / "m" / "runs" / "run.parquet", [run | {"error": None, "smoke": False}], "runs")
    report = build_report("m", n_boot=50)
    table = format_table(report).splitlines()
    assert table[-3] == "trained on (examples from newly solved problems): plain 1 (0), retry 2 (1)"
    assert table[-2] == "passed (first tries / follow-ups): plain 33.3 % / -, retry 50.0 % / 33.3 %"
    md = to_markdown(report)
    assert "## Why: where the training data came from, and what moved" in md
    assert "| arm | problems | solved_by_a_first_try | newly_solved |" in md
    assert "| retry | 4 | 2 | 1 | 0 | 1 |" in md  # the flips
    assert "| arm | level | attempts | passed | accepted | pass_rate | acceptance_rate |" in md
