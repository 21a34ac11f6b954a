"""The nightly regression check: the `nightly` view's comparison on hand-made rows and bad input (fast); the
flow's bookkeeping with the experiment stubbed, and two real smoke-scale nights (slow)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from analysis import nightly as nightly_numbers
from analysis.metrics import Estimate
from analysis.report import ArmResult, Report
from experiments.config import ConfigError, load_config
from flows import nightly
from storage.catalog import query
from storage.writer import write_rows
from tasks import nightly as nightly_tasks

T0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)


def _night(
    home: Path,
    night: int,
    experiment: str,
    config_hash: str,
    arms: dict[str, tuple[float, float, float]],
    code: str = "c",
) -> str:
    """Write one night's `nightly_arms` rows (arm -> (delta_pp, ci_low_pp, ci_high_pp)) and its runs row."""
    started = T0 + timedelta(days=night)
    nightly_id = f"nightly-{started:%Y%m%d-%H%M%S}-000{night}"
    run_id = f"{nightly_id}-{experiment}"
    rows = [
        {
            "nightly_id": nightly_id,
            "nightly_started_at": started,
            "preset": experiment,
            "smoke": False,
            "run_id": run_id,
            "experiment": experiment,
            "config_hash": config_hash,
            "arm": arm,
            "seeds": 3,
            "rounds": 2,
            "problems": 200,
            "base_pass1": 0.3,
            "final_pass1": 0.3 + d / 100,
            "delta_pp": d,
            "ci_low_pp": lo,
            "ci_high_pp": hi,
            "p_value": 0.5,
            "created_at": started,
        }
        for arm, (d, lo, hi) in arms.items()
    ]
    write_rows(home / run_id / "nightly_arms" / "arms.parquet", rows, "nightly_arms")
    write_rows(
        home / run_id / "runs" / "run.parquet",
        [
            {
                "run_id": run_id,
                "experiment": experiment,
                "config_json": "{}",
                "config_hash": config_hash,
                "code_version": code,
                "data_hash": "d",
                "started_at": started,
                "finished_at": started,
                "status": "completed",
                "error": None,
                "smoke": False,
            }
        ],
        "runs",
    )
    return nightly_id


def _verdicts(nightly_id: str) -> dict[str, tuple]:
    df = query("select * from nightly where nightly_id = $id", params={"id": nightly_id})
    return {(r.preset, r.arm): r for r in df.itertuples()}


def test_nightly_view_flags_a_change_only_beyond_the_ci_of_the_difference(pidistill_home: Path):
    n1 = _night(
        pidistill_home,
        1,
        "demo",
        "h1",
        {
            "steady": (5.0, 1.0, 9.0),  # half-width 4
            "drop": (10.0, 8.0, 12.0),  # half-width 2
            "rise": (0.0, -1.0, 1.0),
            "untouched": (0.0, 0.0, 0.0),  # greedy eval of an untrained arm: a zero-width interval
        },
        code="aaa",
    )
    n2 = _night(
        pidistill_home,
        2,
        "demo",
        "h1",
        {
            "steady": (3.0, -1.0, 7.0),  # -2 within ± sqrt(4² + 4²) = 5.66
            "drop": (2.0, 0.0, 4.0),  # -8 beyond ± sqrt(2² + 2²) = 2.83
            "rise": (5.0, 4.0, 6.0),  # +5 beyond ± 1.41
            "untouched": (0.0, 0.0, 0.0),  # no change, even with a zero-width interval
        },
        code="bbb",
    )
    first = _verdicts(n1)
    assert {r.verdict for r in first.values()} == {"no-baseline"}
    assert not any(r.regression for r in first.values())
    v = _verdicts(n2)
    assert {arm: r.verdict for (_, arm), r in v.items()} == {
        "steady": "within-ci",
        "drop": "regression",
        "rise": "improvement",
        "untouched": "within-ci",
    }
    drop = v[("demo", "drop")]
    assert drop.regression and drop.prev_delta_pp == 10.0 and drop.change_pp == -8.0
    assert drop.change_ci_pp == pytest.approx(8**0.5)
    assert drop.prev_nightly_id == n1 and (drop.code_version, drop.prev_code_version) == ("bbb", "aaa")
    assert not v[("demo", "rise")].regression and not v[("demo", "steady")].regression


def test_nightly_compares_with_the_previous_night_of_the_same_experiment_and_config(pidistill_home: Path):
    _night(pidistill_home, 1, "demo", "h1", {"a": (10.0, 9.0, 11.0)})
    n2 = _night(pidistill_home, 2, "demo", "h1", {"a": (2.0, 1.0, 3.0)})
    n3 = _night(pidistill_home, 3, "demo", "h1", {"a": (2.5, 1.5, 3.5)})  # vs night 2, not night 1
    n4 = _night(pidistill_home, 4, "demo", "h2", {"a": (-20.0, -21.0, -19.0)})  # a changed config: new series
    n5 = _night(pidistill_home, 5, "k-sweep", "h1", {"a": (-20.0, -21.0, -19.0)})  # another experiment
    assert _verdicts(n2)[("demo", "a")].verdict == "regression"
    third = _verdicts(n3)[("demo", "a")]
    assert third.verdict == "within-ci" and third.prev_nightly_id == n2
    assert _verdicts(n4)[("demo", "a")].verdict == "no-baseline"
    assert _verdicts(n5)[("k-sweep", "a")].verdict == "no-baseline"
    assert query("select count(*) n from nightly where regression").n.tolist() == [1]


def test_nightly_view_exists_on_a_fresh_home(pidistill_home: Path):
    df = query("select * from nightly")
    assert df.empty and {"delta_pp", "prev_delta_pp", "change_pp", "change_ci_pp", "verdict", "regression"} <= set(df)


def test_unknown_or_repeated_presets_and_bad_overrides_fail_naming_them():
    with pytest.raises(ConfigError, match=r"unknown preset 'no-such-preset'; presets: .*demo"):
        nightly_tasks.resolve_presets(["demo", "no-such-preset"])
    with pytest.raises(ConfigError, match=r"unknown presets 'x', 'y'"):
        nightly_tasks.resolve_presets(["x", "y"])
    with pytest.raises(ConfigError, match="'demo' listed more than once"):
        nightly_tasks.resolve_presets(["demo", "demo"])
    with pytest.raises(ConfigError, match="at least one preset"):
        nightly_tasks.resolve_presets([])
    with pytest.raises(ConfigError, match=r"preset 'demo': .*train.lr"):
        nightly_tasks.resolve_presets(["demo"], overrides=["train.lr=-1"])
    configs = nightly_tasks.resolve_presets(["k-sweep", "demo"], smoke=True, overrides=["rounds=1"])
    assert list(configs) == ["k-sweep", "demo"]
    assert configs["demo"].config_hash() == load_config("demo", ["rounds=1"], smoke_scale=True).config_hash()


def _report(run_id: str) -> Report:
    est = Estimate(mean=0.05, low=-0.01, high=0.11, p_value=0.1, n_seeds=3, n_problems=200)
    arms = [
        ArmResult(arm=a, seeds=3, rounds=2, base_pass1=0.3, final_pass1=0.35, delta=est, vs_reference=None, by_round=[])
        for a in ("no-retry", "retry")
    ]
    return Report(
        run_id=run_id,
        experiment="demo",
        seed_result="",
        lineage={"config_hash": "h"},
        reference="no-retry",
        arms=arms,
        sweep=None,
        rejects=pd.DataFrame(),
        compute=pd.DataFrame(),
        diversity=pd.DataFrame(),
    )


def test_arm_rows_carry_the_reports_interval_in_pp_and_fit_the_schema(pidistill_home: Path):
    rows = nightly_numbers.arm_rows(_report("nightly-x-demo"), "nightly-x", T0, "demo", smoke=True)
    assert [r["arm"] for r in rows] == ["no-retry", "retry"]
    assert rows[0]["delta_pp"] == pytest.approx(5.0) and rows[0]["ci_low_pp"] == pytest.approx(-1.0)
    assert rows[0]["ci_high_pp"] == pytest.approx(11.0) and rows[0]["problems"] == 200
    write_rows(pidistill_home / "nightly-x-demo" / "nightly_arms" / "arms.parquet", rows, "nightly_arms")
    assert query("select arm, verdict from nightly order by arm").values.tolist() == [
        ["no-retry", "no-baseline"],
        ["retry", "no-baseline"],
    ]


def test_markdown_puts_regressions_first_and_names_failed_presets(pidistill_home: Path):
    _night(pidistill_home, 1, "demo", "h1", {"a": (10.0, 9.0, 11.0), "b": (1.0, 0.0, 2.0)})
    n2 = _night(pidistill_home, 2, "demo", "h1", {"a": (2.0, 1.0, 3.0), "b": (1.0, 0.0, 2.0)})
    rows = nightly_numbers.comparison(n2)
    md = nightly_numbers.to_markdown(n2, rows, {"k-sweep": "PreflightError: no GPU"}, ["demo", "k-sweep"], smoke=False)
    assert "**1 regression(s)**" in md and "**1 preset(s) failed**" in md
    assert md.index("## Regressions") < md.index("## Every arm") < md.index("## Failed presets")
    assert "| demo | a | regression | +2.0 [+1.0, +3.0] | +10.0 | -8.0 | 1.4 |" in md
    assert "**k-sweep**: PreflightError: no GPU" in md
    table = nightly_numbers.table_rows(rows)
    assert table[0] == {
        **table[0],
        "preset": "demo",
        "arm": "a",
        "verdict": "regression",
        "change_pp": -8.0,
        "ci95_pp": "[+1.0, +3.0]",
    }


@pytest.mark.slow  # starts Prefect's ephemeral server (~20 s); the comparison itself is tested above
def test_flow_runs_every_preset_records_failures_and_fails_on_a_regression(pidistill_home: Path, monkeypatch):
    """The flow's bookkeeping with the experiment stubbed: night 1 sets the baseline (one preset crashes and
    the other still runs), night 2 regresses; both nights publish their artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    deltas = iter([(10.0, 9.0, 11.0), (2.0, 1.0, 3.0)])
    ran: list[str] = []

    def fake_experiment(cfg, run_id):
        ran.append(run_id)
        if cfg.name == "k-sweep":
            raise RuntimeError("no GPU here")

    def fake_record(run_id, nightly_id, started, preset, smoke):
        d, lo, hi = next(deltas)
        rows = nightly_numbers.arm_rows(_report(run_id), nightly_id, started, preset, smoke)
        rows = [{**r, "delta_pp": d, "ci_low_pp": lo, "ci_high_pp": hi} for r in rows]
        write_rows(pidistill_home / run_id / "nightly_arms" / "arms.parquet", rows, "nightly_arms")

    monkeypatch.setattr(nightly, "experiment_flow", fake_experiment)
    monkeypatch.setattr(nightly, "record_arms", fake_record)
    with pytest.raises(nightly_tasks.NightlyFailed, match=r"1 preset\(s\) failed: k-sweep"):
        nightly.nightly_flow(presets=["k-sweep", "demo"], smoke=True)
    assert [r.split("-", 4)[-1] for r in ran] == ["k-sweep", "demo"] and ran[0].startswith("nightly-")
    with pytest.raises(
        nightly_tasks.NightlyFailed, match=r"2 regression\(s\): demo/no-retry -8.0pp \(± 1.4\); demo/retry"
    ):
        nightly.nightly_flow(presets=["demo"], smoke=True)
    assert query("select count(*) n from nightly where regression").n.tolist() == [2]
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        nightly.nightly_flow(presets=["nope"])

    async def artifact_keys() -> list[str]:
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[nightly_tasks.TABLE_KEY, nightly_tasks.REPORT_KEY])
                )
            )
        return sorted(a.key for a in arts)

    import asyncio

    assert asyncio.run(artifact_keys()) == sorted([nightly_tasks.REPORT_KEY] * 2 + [nightly_tasks.TABLE_KEY] * 2)


def test_nightly_parameters_are_described_for_the_ui():
    from prefect.utilities.callables import parameter_schema

    props = parameter_schema(nightly.nightly_flow).model_dump()["properties"]
    assert set(props) == {"presets", "smoke", "overrides", "fail_on_regression"}
    assert all(p.get("description") for p in props.values())
    assert props["presets"]["default"] == ["demo"]


@pytest.mark.slow
def test_two_real_smoke_nights_compare_like_for_like(tiny_model: Path, pidistill_home: Path):
    """Two nights of the demo at micro scale (one round): the second is compared with the first."""
    small = ["rounds=1", "domain.eval_size=24", "arms=[{name: no-retry, set: {retry.max_retries: 0}}, {name: retry}]"]
    first = nightly.nightly_flow(presets=["demo"], smoke=True, overrides=small)
    assert [(r["arm"], r["verdict"]) for r in first] == [("no-retry", "no-baseline"), ("retry", "no-baseline")]
    second = nightly.nightly_flow(presets=["demo"], smoke=True, overrides=small, fail_on_regression=False)
    assert [r["prev_nightly_id"] for r in second] == [first[0]["nightly_id"]] * 2
    assert all(r["verdict"] in ("within-ci", "regression", "improvement") for r in second)
    summary = query("select run_id, arm, delta_pp from summary where run_id like 'nightly-%' order by all")
    view = query("select run_id, arm, delta_pp from nightly order by all")
    assert summary.run_id.tolist() == view.run_id.tolist()
    assert summary.delta_pp.round(6).tolist() == view.delta_pp.round(6).tolist()  # the report's Δpp = summary's
    runs = query("select run_id, experiment, status from runs where run_id like 'nightly-%'")
    assert set(runs.experiment) == {"demo"} and set(runs.status) == {"completed"} and len(runs) == 2
