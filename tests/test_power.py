"""Power (analysis.power, `pidistill plan`): the MDE against a hand computation and against the report's own
bootstrap in simulation, seeds/problems needed as the MDE's inverse, variance components recovered from
synthetic evaluations, the wording of an interval at this power, and the command on good and bad input."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import paired_bootstrap
from analysis.power import (
    VarianceComponents,
    assumed_components,
    catalog_components,
    components,
    mde,
    paired_differences,
    problems_needed,
    reading,
    seed_effect,
    seed_effects_by_arm,
    seeds_needed,
    standard_error,
)
from analysis.report import build_report, format_table, to_markdown
from cli.main import main
from experiments.config import load_config
from storage.writer import write_rows

C = VarianceComponents(seed=0.02**2, problem=0.03, residual=0.07, source="test")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_mde_is_the_hand_computation():
    # SE^2 = 0.0004/3 + 0.03/200 + 3 * 0.07/(3 * 200); z_0.975 + z_0.8 = 1.959964 + 0.841621
    se2 = 0.0004 / 3 + 0.03 / 200 + 3 * 0.07 / 600
    assert standard_error(C, 3, 200) == pytest.approx(math.sqrt(se2))
    assert mde(C, 3, 200) == pytest.approx((1.959964 + 0.841621) * math.sqrt(se2), rel=1e-6)
    assert mde(C, 3, 200) == pytest.approx(0.0705, abs=5e-4)
    assert mde(C, 3, 200, power=0.5) == pytest.approx(1.959964 * math.sqrt(se2), rel=1e-6)  # half the time at z


def test_more_seeds_or_problems_detect_smaller_effects():
    by_seeds = [mde(C, s, 200) for s in (1, 2, 3, 5, 10, 100)]
    by_problems = [mde(C, 3, p) for p in (10, 50, 200, 1000, 10_000)]
    assert by_seeds == sorted(by_seeds, reverse=True) and len(set(by_seeds)) == len(by_seeds)
    assert by_problems == sorted(by_problems, reverse=True) and len(set(by_problems)) == len(by_problems)
    # each dimension alone has a floor: the other's own variance
    assert mde(C, 10**9, 200) == pytest.approx((1.959964 + 0.841621) * math.sqrt(0.03 / 200), rel=1e-4)


@pytest.mark.parametrize("effect", [0.03, 0.05, 0.088, -0.088, 0.2, 0.5])
def test_seeds_and_problems_needed_invert_the_mde(effect):
    s = seeds_needed(C, effect, problems=200)
    if s is None:
        assert mde(C, 10**9, 200) > abs(effect)
    else:
        assert mde(C, s, 200) <= abs(effect) and (s == 1 or mde(C, s - 1, 200) > abs(effect))
    p = problems_needed(C, effect, seeds=3)
    if p is None:
        assert mde(C, 3, 10**9) > abs(effect)
    else:
        assert mde(C, 3, p) <= abs(effect) and (p == 1 or mde(C, 3, p - 1) > abs(effect))


def test_needs_for_effects_out_of_reach_and_bad_effects():
    assert seeds_needed(C, 0.02, problems=200) is None  # the problems alone keep the MDE at 3.4 pp
    assert problems_needed(C, 0.02, seeds=3) is None  # the seeds alone keep it at 3.2 pp
    assert seeds_needed(C, 0.5, problems=200) == 1 and problems_needed(C, 0.5, seeds=3) == 4
    for bad in (0.0, math.nan):
        with pytest.raises(ValueError, match="nonzero difference"):
            seeds_needed(C, bad, problems=200)
    with pytest.raises(ValueError, match="at least 1 seed"):
        mde(C, 0, 200)
    with pytest.raises(ValueError, match="component seed"):
        VarianceComponents(-1.0, 0.0, 0.0, "x")


def test_the_mde_is_what_the_reports_bootstrap_detects_80_percent_of_the_time():
    """A true effect of the MDE, drawn from the model 200 times: the report's paired bootstrap (the same
    function) excludes 0 in about 80 % of them; a little more, the MDE being slightly conservative."""
    rng = np.random.default_rng(7)
    c = VarianceComponents(seed=0.03**2, problem=0.15**2, residual=0.25**2, source="sim")
    s, p = 5, 200
    effect = mde(c, s, p)
    detected = 0
    for i in range(200):
        d = (
            effect
            + rng.normal(0, math.sqrt(c.seed), (s, 1))
            + rng.normal(0, math.sqrt(c.problem), (1, p))
            + rng.normal(0, math.sqrt(c.residual), (s, p))
        )
        detected += paired_bootstrap(d, n_boot=500, seed=i).low > 0
    assert 0.74 <= detected / 200 <= 0.95


def _evaluations(
    rng: np.random.Generator, sd: tuple[float, float, float], runs: int, seeds: int, problems: int, n: int
) -> pd.DataFrame:
    """evaluations rows of `runs` runs x 2 arms: round 0 the base (the same model for every seed), round 1 the
    base + 5 pp + a seed shift + a problem shift + a seed x problem one (sds `sd`), n samples a problem."""
    rows = []
    for r in range(runs):
        base = rng.uniform(0.35, 0.65, problems)
        for arm in ("a", "b"):
            shift = rng.normal(0, sd[1], problems)
            base_pass = rng.binomial(n, base)
            for s in range(seeds):
                rate = np.clip(base + 0.05 + rng.normal(0, sd[0]) + shift + rng.normal(0, sd[2], problems), 0, 1)
                final = rng.binomial(n, rate)
                for p in range(problems):
                    for rnd, k in ((0, base_pass[p]), (1, final[p])):
                        rows.append((f"run{r}", arm, s, rnd, f"p{p}", n, int(k)))
    return pd.DataFrame(rows, columns=["run_id", "arm", "seed", "round", "problem_id", "n", "n_pass"])


def test_components_are_recovered_from_synthetic_evaluations():
    ev = _evaluations(np.random.default_rng(0), (0.03, 0.08, 0.10), runs=4, seeds=20, problems=150, n=2000)
    matrices = paired_differences(ev)
    assert len(matrices) == 8 and all(d.shape == (20, 150) for d in matrices)
    assert np.mean([d.mean() for d in matrices]) == pytest.approx(0.05, abs=0.01)
    c = components(matrices, "synthetic")
    # the base's and final's binomial noise (~0.25/2000 each) is too small to matter at n = 2000
    assert c.seed == pytest.approx(0.03**2, rel=0.35)
    assert c.problem == pytest.approx(0.08**2, rel=0.25)
    assert c.residual == pytest.approx(0.10**2, rel=0.1)
    assert c.assumed == () and c.source == "synthetic"


def test_binomial_noise_lands_where_the_design_puts_it():
    """No effect at all, n = 4 samples of p = 0.3: the base's sampling noise is shared by every seed (a
    problem component), the trained rounds' is each seed's own (residual); both p(1-p)/n = 0.0525."""
    rng = np.random.default_rng(1)
    rows = []
    for arm in ("a", "b"):
        base = rng.binomial(4, 0.3, 400)  # round 0: one base model, evaluated once
        for s in range(10):
            final = rng.binomial(4, 0.3, 400)
            rows += [(arm, s, 0, f"p{p}", 4, int(base[p])) for p in range(400)]
            rows += [(arm, s, 1, f"p{p}", 4, int(final[p])) for p in range(400)]
    ev = pd.DataFrame(rows, columns=["arm", "seed", "round", "problem_id", "n", "n_pass"])  # no run_id: one run
    c = components(paired_differences(ev), "binomial")
    assert c.residual == pytest.approx(0.3 * 0.7 / 4, rel=0.1)
    assert c.problem == pytest.approx(0.3 * 0.7 / 4, rel=0.25)
    assert c.seed < 0.0005


def test_one_seed_cannot_measure_seed_variance_and_says_so():
    ev = _evaluations(np.random.default_rng(4), (0.03, 0.08, 0.10), runs=1, seeds=1, problems=200, n=1000)
    c = components(paired_differences(ev), "pilot")
    assert c.seed == assumed_components().seed and c.problem == 0.0
    assert c.residual == pytest.approx(0.08**2 + 0.10**2, rel=0.3)  # all of a problem's variance, conservatively
    assert c.assumed == ("seed", "problem/residual split")
    assert c.describe() == (
        f"seed sd 2.0 pp (assumed), problem sd 0.0 pp, seed x problem sd {math.sqrt(c.residual) * 100:.1f} pp "
        "(with the problem's: one seed cannot tell them apart)"
    )
    with pytest.raises(ValueError, match="at least 2 problems"):
        components([np.zeros((3, 1))], "one problem")


def test_arm_vs_arm_differences_pair_each_arm_with_the_reference():
    ev = _evaluations(np.random.default_rng(5), (0.0, 0.0, 0.0), runs=1, seeds=2, problems=5, n=10)
    (d,) = paired_differences(ev, versus="a")
    a1 = ev[(ev.arm == "a") & (ev["round"] == 1)].pivot_table(index="seed", columns="problem_id", values="n_pass")
    b1 = ev[(ev.arm == "b") & (ev["round"] == 1)].pivot_table(index="seed", columns="problem_id", values="n_pass")
    np.testing.assert_allclose(d, ((b1 - a1) / 10).to_numpy())
    assert paired_differences(ev, versus="no-such-arm") == []
    assert paired_differences(ev[ev["round"] == 0]) == []  # nothing trained yet: nothing to measure


def test_reading_of_an_interval_at_this_power():
    assert reading(0.01, 0.09, 0.07) == ""  # excludes 0: the number speaks
    assert reading(-0.09, -0.01, 0.07) == ""
    assert reading(-0.02, 0.10, 0.071) == "inconclusive at this power (MDE 7.1 pp)"
    assert reading(-0.02, 0.10, 0.071, expected=0.088) == "inconclusive at this power (MDE 7.1 pp)"
    assert reading(-0.02, 0.03, 0.03, expected=0.088) == (
        "no effect detected; the interval excludes the sprint's +8.8 pp"
    )
    assert reading(0.0, 0.0, 0.0) == "no change on any problem"


def test_the_seed_result_effect_is_its_first_pp_number():
    assert seed_effect("retry +8.8pp vs double-sample +1.4pp (GSM8K, real models)") == pytest.approx(0.088)
    assert seed_effect("-2.4pp: retry hurts in Lean") == pytest.approx(-0.024)
    assert seed_effect("K=3 optimal +10.1pp; K=5 regresses") == pytest.approx(0.101)
    assert seed_effect("+0.04pp over 5 seeds") == pytest.approx(0.0004)
    assert seed_effect("R3 regresses: two rounds are the optimum") is None
    by_arm = seed_effects_by_arm("retry +8.8pp vs double-sample +1.4pp", ["no-retry", "double-sample", "retry"])
    assert by_arm == pytest.approx({"retry": 0.088, "double-sample": 0.014})
    assert seed_effects_by_arm("no-retry +2pp", ["retry"]) == {}  # 'retry' inside 'no-retry' is not the arm
    assert seed_effects_by_arm("+8.8pp: the retry signal", ["retry"]) == {}


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_plan_demo_on_an_empty_catalog_assumes_the_variance(capsys, pidistill_home: Path):
    assert main(["plan", "demo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("demo: 6 seeds x 1000 eval problems; arms no-retry, double-sample, retry")
    assert "variance vs base: assumed (no earlier runs of 'demo')" in out
    assert re.search(rf"^  vs base +{mde(assumed_components(), 6, 1000) * 100:.1f} pp$", out, flags=re.MULTILINE)
    assert "vs no-retry" in out  # arm vs the reference arm too
    assert 'effect +8.8 pp, from seed_result "retry +8.8pp' in out and "1 seed at 1000 problems" in out
    assert main(["plan", "demo", "--effect", "0.05", "--set", "seeds=[0,1,2,3,4]"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("demo: 5 seeds x 1000") and "effect +5.0 pp, --effect:" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["plan", "no-such-preset"], "pidistill: config error: unknown preset 'no-such-preset'"),
        (["plan", "demo", "--effect", "5"], "pidistill plan: --effect 5: give a nonzero difference"),
        (["plan", "demo", "--effect", "0"], "pidistill plan: --effect 0: give a nonzero difference"),
        (["plan", "demo", "--pilot", "nope"], "pidistill plan: no run 'nope' in the catalog"),
        (["plan", "demo", "--set", "seeds=[]"], "pidistill: config error: seeds"),
    ],
)
def test_plan_on_bad_input_is_one_line_and_exit_2(args, message, capsys, pidistill_home: Path):
    assert main(args) == 2
    assert _one_line(capsys.readouterr().err).startswith(message)


def _write_run(home: Path, run_id: str, config_hash: str, ev: pd.DataFrame, smoke: bool = False) -> None:
    config = {"arms": [{"name": a} for a in sorted(set(ev.arm))], "domain": {"name": "arith"}}
    row = {
        "run_id": run_id,
        "experiment": "demo",
        "config_json": json.dumps(config),
        "config_hash": config_hash,
        "code_version": "c" * 40,
        "data_hash": "d1",
        "started_at": T0,
        "finished_at": T0,
        "status": "completed",
        "error": None,
        "smoke": smoke,
    }
    write_rows(home / run_id / "runs" / "run.parquet", [row], "runs")
    records = ev.assign(run_id=run_id, model_ref="m").to_dict("records")
    write_rows(home / run_id / "evaluations" / "all.parquet", records, "evaluations")


def test_plan_measures_the_variance_on_earlier_runs_of_the_preset(capsys, pidistill_home: Path):
    ev = _evaluations(np.random.default_rng(6), (0.03, 0.08, 0.10), runs=1, seeds=4, problems=60, n=1000)
    ev = ev.assign(arm=ev.arm.map({"a": "no-retry", "b": "retry"}))
    _write_run(pidistill_home, "demo-earlier", load_config("demo").config_hash(), ev)
    _write_run(pidistill_home, "demo-smoke", "other", ev, smoke=True)  # another scale: not used
    c = catalog_components("demo", config_hash=load_config("demo").config_hash())
    assert c.source == "run demo-earlier (up to 4 seeds x 60 problems)" and c.assumed == ()
    assert catalog_components("demo", config_hash="changed").source.startswith("run demo-earlier")  # same scale
    assert catalog_components("demo", smoke=True).source.startswith("run demo-smoke")
    assert catalog_components("demo", runs=["demo-smoke"]).source.startswith("run demo-smoke")  # a named pilot
    assert main(["plan", "demo"]) == 0
    out = capsys.readouterr().out
    assert "variance vs base: run demo-earlier (up to 4 seeds x 60 problems): seed sd" in out
    assert "variance vs no-retry: run demo-earlier" in out


def test_the_report_states_its_power_and_reads_each_arm(pidistill_home: Path):
    """A run where the trained rounds are the base plus noise: each arm's interval holds 0, so each reads
    'inconclusive at this power' with the MDE of the run's own design and variance."""
    ev = _evaluations(np.random.default_rng(8), (0.02, 0.05, 0.2), runs=1, seeds=3, problems=40, n=1)
    ev.loc[ev["round"] == 1, "n_pass"] = ev.loc[ev["round"] == 0, "n_pass"].to_numpy()  # no change ...
    flip = (ev["round"] == 1) & (ev.problem_id.isin([f"p{i}" for i in range(0, 40, 8)]))
    ev.loc[flip, "n_pass"] = 1 - ev.loc[flip, "n_pass"]  # ... except 5 problems that flip
    ev.loc[flip & (ev.seed == 1), "n_pass"] = ev.loc[flip & (ev.seed == 1), "n_pass"] * 0  # a seed differs
    _write_run(pidistill_home, "flat", "h", ev)
    report = build_report("flat", n_boot=200)
    assert report.power is not None and report.power.seeds == 3 and report.power.problems == 40
    assert report.power.components.source == "this run"
    for a in report.arms:
        assert a.delta.low <= 0 <= a.delta.high
        assert a.reading == f"inconclusive at this power (MDE {mde(report.power.components, 3, 40) * 100:.1f} pp)"
    table = format_table(report)
    assert f"power: MDE {report.power.mde * 100:.1f} pp at 3 seeds x 40 problems" in table
    assert "inconclusive at this power (95 % interval holds 0): a, b" in table
    assert report.power_vs_reference is not None and report.power_vs_reference.comparison == "vs a"
    versus = f"vs a: MDE {report.power_vs_reference.mde * 100:.1f} pp at 3 seeds x 40 problems"
    assert f"{versus}; cannot tell apart at this power: b" in table.splitlines()
    md = to_markdown(report)
    assert "Power: **MDE" in md and "| p_value | reading | vs_a |" in md
    assert md.count("inconclusive at this power (MDE") == 2
