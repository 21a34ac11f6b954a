"""The report on hand-written tables (fast): pass@k from the evaluations table, one view model rendered to
markdown and HTML, cells escaped. Whole runs through the report are in tests/test_flows.py (slow)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import Estimate, mean_pass_at_k
from analysis.report import ArmResult, Report, build_report, to_html, to_markdown, write_report
from analysis.tables import Table, markdown_table
from storage.schema import ATTEMPTS
from storage.writer import write_rows

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NASTY = "bad | <b>bold</b>"


def _run(home: Path, run_id: str, n: dict[str, int], seeds=(0, 1), problems=6) -> pd.DataFrame:
    """A finished run with two arms, rounds 0-1, `n[arm]` eval samples per problem; returns its evaluations."""
    config = {"arms": [{"name": arm} for arm in n], "domain": {"name": "arith"}, "seed_result": "+3 pp"}
    write_rows(
        home / run_id / "runs" / "run.parquet",
        [
            {
                "run_id": run_id,
                "experiment": "demo",
                "config_json": json.dumps(config),
                "config_hash": "h1",
                "code_version": "c" * 40,
                "data_hash": "d1",
                "started_at": T0,
                "finished_at": T0,
                "status": "completed",
                "error": None,
                "smoke": False,
            }
        ],
        "runs",
    )
    rng = np.random.default_rng(0)
    ev = pd.DataFrame(
        [
            {
                "run_id": run_id,
                "arm": arm,
                "seed": s,
                "round": r,
                "problem_id": f"p{p}",
                "model_ref": "m",
                "n": k,
                "n_pass": int(rng.integers(0, k + 1)),
            }
            for arm, k in n.items()
            for s in seeds
            for r in (0, 1)
            for p in range(problems)
        ]
    )
    write_rows(home / run_id / "evaluations" / "all.parquet", ev.to_dict("records"), "evaluations")
    attempt = dict.fromkeys(ATTEMPTS.names)
    write_rows(
        home / run_id / "attempts" / "train.parquet",
        [
            {
                **attempt,
                "run_id": run_id,
                "arm": arm,
                "seed": 0,
                "round": 1,
                "phase": "train",
                "problem_id": "p0",
                "attempt_id": f"{arm}-{i}",
                "passed": False,
                "accepted": False,
                "reject_reason": NASTY,
            }
            for arm in n
            for i in range(2)
        ],
        "attempts",
    )
    return ev


def test_pass_at_k_per_arm_and_round_uses_the_largest_n_and_the_unbiased_estimator(pidistill_home: Path):
    ev = _run(pidistill_home, "r4", {"base": 4, "rft": 4})
    report = build_report("r4", n_boot=200)
    assert report.k == 4
    for a in report.arms:
        assert [p.round for p in a.pass_at_k] == [0, 1]
        for p, (rnd, e) in zip(a.pass_at_k, a.by_round):
            sub = ev[(ev.arm == a.arm) & (ev["round"] == rnd)]
            assert p.n == 4 and p.seeds == 2 and p.pass1 == pytest.approx(e.mean)
            assert p.pass_k.mean == pytest.approx(mean_pass_at_k(sub.n.to_numpy(), sub.n_pass.to_numpy(), 4))
            assert p.pass_k.low <= p.pass_k.mean <= p.pass_k.high and p.pass_k.mean >= p.pass1
    md = to_markdown(report)
    assert "## pass@k by round" in md and "| arm | round | n | pass1 | pass@4 | ci_low | ci_high | seeds |" in md
    first = report.arms[0].pass_at_k[0]
    assert f"| base | 0 | 4 | {first.pass1:.3f} | {first.pass_k.mean:.3f} |" in md
    assert "pass@4" in to_html(report)


def test_pass_at_k_is_pass_at_1_when_one_sample_was_drawn(pidistill_home: Path):
    _run(pidistill_home, "r1", {"base": 1, "rft": 1})
    report = build_report("r1", n_boot=200)
    assert report.k == 1 and all(a.pass_at_k == [] for a in report.arms)
    assert "pass@k equals pass@1 (above)" in to_markdown(report) and "(n=1)" in to_markdown(report)


def test_an_arm_with_fewer_samples_than_k_shows_a_dash(pidistill_home: Path):
    _run(pidistill_home, "mixed", {"base": 1, "rft": 3})
    report = build_report("mixed", n_boot=200)
    base, rft = report.arms
    assert report.k == 3 and all(p.pass_k is None and p.n == 1 for p in base.pass_at_k)
    assert all(p.pass_k is not None for p in rft.pass_at_k)
    assert f"| base | 0 | 1 | {base.pass_at_k[0].pass1:.3f} | - | - | - | 2 |" in to_markdown(report)


def test_markdown_and_html_have_the_same_sections_and_cells_are_escaped(pidistill_home: Path):
    _run(pidistill_home, "r4", {"base": 4, "rft": 4})
    path = write_report(build_report("r4", n_boot=200))
    md, html = (path.parent / "report.md").read_text(), path.read_text()
    headings = re.findall(r"^#+ (.*)$", md, flags=re.MULTILINE)
    assert headings == [
        "demo — run `r4`",
        "pass@1 by round",
        "pass@k by round",
        "First tries and retries",
        "Why: where the training data came from, and what moved",
        "An accepted retry, from its failed first try",
        "Compute per arm (all seeds and rounds)",
        "Path diversity of correct training attempts",
    ]
    assert re.findall(r"<h\d>(.*?)</h\d>", html) == [h.replace("`r4`", "<code>r4</code>") for h in headings]
    assert "![pass@1 by round](pass_by_round.png)" in md and "data:image/png;base64," in html
    assert "The original sprint measured: **+3 pp**" in md and "<strong>+3 pp</strong>" in html
    # a `|` and a tag inside a cell: one escaped cell in HTML, an escaped pipe in markdown
    assert "<td>bad | &lt;b&gt;bold&lt;/b&gt;</td>" in html and "<b>" not in html
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", html) if "bad |" in r)
    assert row.count("<td>") == 4  # arm, try, outcome, attempts
    assert "| base | first try | bad \\| <b>bold</b> | 2 |" in md
    # compute, diversity and answer format: no stages, no passing train attempts, no eval attempts
    assert md.count("_(none)_") == 3


def _report(rejects: pd.DataFrame) -> Report:
    est = Estimate(mean=0.05, low=-0.01, high=0.11, p_value=0.1, n_seeds=3, n_problems=200)
    arms = [
        ArmResult(
            arm="a|b",
            seeds=3,
            rounds=1,
            base_pass1=0.3,
            final_pass1=0.35,
            delta=est,
            vs_reference=None,
            by_round=[(0, est), (1, est)],
        )
    ]
    return Report(
        run_id="x",
        experiment="<demo>",
        seed_result="",
        reference="a|b",
        arms=arms,
        sweep=None,
        lineage={"config_hash": "h", "code_version": "c", "data_hash": "d", "status": "completed"},
        rejects=rejects,
        compute=pd.DataFrame(),
        diversity=pd.DataFrame(),
    )


def test_a_cell_with_a_pipe_and_a_tag_is_one_escaped_html_cell():
    html = to_html(_report(pd.DataFrame({"arm": ["a|b"], "outcome": ["x | <b>y</b>"]})))
    assert "<td>a|b</td><td>x | &lt;b&gt;y&lt;/b&gt;</td>" in html
    assert "<title>&lt;demo&gt; x</title>" in html and "<demo>" not in html
    assert "<b>" not in html and "<img" not in html  # no plots in a hand-made report: none embedded


def test_markdown_table_is_the_one_table_writer():
    assert markdown_table(["a", "b|c"], [["1", "x|y"], ["2", "two\nlines"]]) == (
        "| a | b\\|c |\n|---|---|\n| 1 | x\\|y |\n| 2 | two lines |"
    )
    t = Table.from_frame(pd.DataFrame({"f": [0.12345, 3.0, 0.5], "i": [1, 2, 3], "s": ["a", "b", "c"]}))
    assert t.rows == [["0.123", "1", "a"], ["3", "2", "b"], ["0.500", "3", "c"]]
    assert Table.from_frame(pd.DataFrame()).markdown() == "_(none)_"


def test_arms_on_different_domains_are_not_paired_and_their_diversity_is_their_own(pidistill_home: Path):
    """path-diversity runs a code arm and a Lean arm: no shared problems to pair them on, and each arm's
    correct attempts are normalised as its own domain's solutions (code by AST, Lean by tactics)."""
    from analysis.report import format_table

    _run(pidistill_home, "two", {"code": 1, "lean": 1})  # the runs row and attempts are replaced below
    config = {
        "domain": {"name": "mbpp"},
        "arms": [{"name": "code"}, {"name": "lean", "set": {"domain.name": "minif2f", "model.chat": "off"}}],
    }
    row = {
        "run_id": "two",
        "experiment": "path-diversity",
        "config_json": json.dumps(config),
        "config_hash": "h",
        "code_version": "c" * 40,
        "data_hash": "d",
        "started_at": T0,
        "finished_at": T0,
        "status": "completed",
        "error": None,
        "smoke": False,
    }
    write_rows(pidistill_home / "two" / "runs" / "run.parquet", [row], "runs")
    rng = np.random.default_rng(1)
    ev = [
        {
            "run_id": "two",
            "arm": arm,
            "seed": s,
            "round": r,
            "problem_id": f"{prefix}/{p}",
            "model_ref": "m",
            "n": 1,
            "n_pass": int(rng.integers(0, 2)),
        }
        for arm, prefix in (("code", "mbpp"), ("lean", "minif2f"))
        for s in (0, 1)
        for r in (0, 1)
        for p in range(6)
    ]
    write_rows(pidistill_home / "two" / "evaluations" / "all.parquet", ev, "evaluations")
    solutions = {  # two renamings of one program; two proofs with one tactic sequence
        "code": ("mbpp/0", ["def f(a): return a*2", "def g(b):\n    return b * 2"]),
        "lean": ("minif2f/0", ["  nlinarith [sq_nonneg x]\n  simp", "  nlinarith [h₀, h₁]\n  simp"]),
    }
    attempt = dict.fromkeys(ATTEMPTS.names)
    rows = [
        {
            **attempt,
            "run_id": "two",
            "arm": arm,
            "seed": 0,
            "round": 1,
            "phase": "train",
            "problem_id": problem,
            "attempt_id": f"{arm}-{i}",
            "completion": completion,
            "passed": True,
            "accepted": True,
        }
        for arm, (problem, completions) in solutions.items()
        for i, completion in enumerate(completions)
    ]
    write_rows(pidistill_home / "two" / "attempts" / "train.parquet", rows, "attempts")
    report = build_report("two", n_boot=200)
    code, lean = report.arms
    assert report.reference == "code" and code.vs_reference is None and lean.vs_reference is None
    assert lean.delta.n_problems == 6  # each arm is still compared with its own base
    div = report.diversity.set_index("arm")
    assert div.loc["code", "domain"] == "mbpp" and div.loc["lean", "domain"] == "minif2f"
    assert div.loc["code", "distinct_per_problem"] == 1 and div.loc["lean", "distinct_per_problem"] == 1
    assert "shares no problems with it" in to_markdown(report)
    assert format_table(report).splitlines()[2].split()[-5] == "-"  # lean's `vs code` cell
