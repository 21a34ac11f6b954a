"""Whole experiments through Prefect (ephemeral mode): tiny model, real training, real DuckDB.

One small config is run twice (two run ids) and shared by the tests of this module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.config import load_config
from flows.cli import main
from flows.experiment import experiment_flow
from storage.catalog import query

pytestmark = pytest.mark.slow

SMALL = [
    "seeds=[0, 1]", "rounds=1", "domain.train_size=24", "domain.eval_size=40",
    "sampling.n=3", "train.epochs=1", "train.batch_size=8",
]


@pytest.fixture(scope="module")
def runs(tiny_model: Path, tmp_path_factory) -> tuple[Path, list[dict]]:
    """Run the small experiment twice in one home; returns (home, [summary of each run])."""
    home = tmp_path_factory.mktemp("flows-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("PIDISTILL_HOME", str(home))
    try:
        cfg = load_config("demo", SMALL)
        summaries = [experiment_flow(cfg, run_id=rid) for rid in ("small-a", "small-b")]
    finally:
        mp.undo()
    return home, summaries


@pytest.fixture
def home(runs, monkeypatch) -> Path:
    monkeypatch.setenv("PIDISTILL_HOME", str(runs[0]))
    return runs[0]


def test_summary_has_every_arm(runs):
    summary = runs[1][0]
    assert {r["arm"] for r in summary} == {"no-train", "rft"}
    for r in summary:
        assert r["seeds"] == 2 and r["rounds"] == 1
        assert 0.0 < r["base_pass1"] < 1.0
    no_train = next(r for r in summary if r["arm"] == "no-train")
    assert no_train["delta_pp"] == 0.0  # greedy eval of an untouched model


def test_attempts_cover_every_arm_seed_round_with_both_verdicts(home):
    df = query("""select arm, seed, round, count(*) n, avg(passed::int) p from attempts
                  where run_id = 'small-a' and phase = 'train' group by all order by all""")
    assert df[["arm", "seed", "round"]].values.tolist() == [
        ["no-train", 0, 1], ["no-train", 1, 1], ["rft", 0, 1], ["rft", 1, 1]]
    assert (df.n == 24 * 3).all()
    assert ((df.p > 0) & (df.p < 1)).all()


def test_rejected_attempts_keep_their_reason(home):
    df = query("""select accepted, reject_reason, count(*) n from attempts
                  where run_id = 'small-a' and phase = 'train' group by all""")
    reasons = set(df.reject_reason.dropna())
    assert "failed" in reasons and reasons <= {"failed", "duplicate"}
    assert df[df.accepted].reject_reason.isna().all()
    assert df[~df.accepted].reject_reason.notna().all()


def test_eval_rows_base_and_rounds(home):
    df = query("""select arm, round, count(*) n, sum(n) samples from evaluations
                  where run_id = 'small-a' and seed = 0 group by all order by all""")
    assert df.values.tolist() == [["no-train", 0, 40, 40], ["no-train", 1, 40, 40], ["rft", 0, 40, 40], ["rft", 1, 40, 40]]
    evals = query("select count(*) n from attempts where run_id = 'small-a' and phase = 'eval'")
    assert evals.n.tolist() == [2 * 2 * 2 * 40]  # arms x seeds x (base + round 1) x problems


def test_training_rows_and_sft_examples_match_accepted_attempts(home):
    tr = query("select arm, seed, method, n_examples, steps, checkpoint from trainings where run_id = 'small-a' order by all")
    assert tr.method.tolist() == ["none", "none", "sft", "sft"]
    rft = tr[tr.arm == "rft"]
    assert (rft.steps > 0).all() and all(Path(c).is_dir() for c in rft.checkpoint)
    acc = query("""select arm, seed, count(*) n from attempts where run_id = 'small-a' and accepted group by all order by all""")
    ex = query("select arm, seed, count(*) n from sft_examples where run_id = 'small-a' group by all order by all")
    assert acc.values.tolist() == ex.values.tolist()
    assert tr.n_examples.tolist() == ex.n.tolist()
    joined = query("""select count(*) n from sft_examples e join attempts a using (run_id, attempt_id)
                      where e.run_id = 'small-a' and (e.prompt != a.prompt or e.completion != a.completion)""")
    assert joined.n.tolist() == [0]  # no PI in these runs: the training prompt is the attempt's prompt


def test_runs_record_lineage(home):
    df = query("select run_id, status, config_hash, code_version, data_hash, finished_at from runs order by run_id")
    assert df.run_id.tolist() == ["small-a", "small-b"]
    assert (df.status == "completed").all() and df.finished_at.notna().all()
    assert df.config_hash.nunique() == 1 and df.data_hash.nunique() == 1
    assert (df.code_version.str.len() > 0).all()


def test_same_config_and_seed_give_identical_completions(home):
    df = query("""select run_id, md5(string_agg(completion, '|' order by arm, seed, round, phase, problem_id,
                                                 attempt_idx, sample_idx)) h, count(*) n
                  from attempts group by run_id order by run_id""")
    assert df.n.tolist()[0] == df.n.tolist()[1] and df.h.nunique() == 1


def test_no_temp_files_left(home):
    assert not [p for p in home.rglob("*") if ".tmp-" in p.name]


def test_cli_run_and_sql(tiny_model: Path, pidistill_home: Path, capsys):
    assert main(["run", "demo", "--run-id", "cli-1", "--set", "seeds=[3]", "--set", "arms=[{name: rft}]",
                 *[a for s in SMALL[1:] for a in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert "rft" in out and "Δpp vs base" in out
    assert main(["sql", "select arm, seed, round, count(*) n, avg(passed::int) p from attempts group by all order by all"]) == 0
    table = capsys.readouterr().out
    assert "rft" in table and "seed" in table
    assert main(["run", "demo", "--run-id", "cli-1"]) == 2  # the id exists: refuse, write nothing
    assert main(["sql", "select * from nope"]) == 2


def test_failed_run_is_marked_failed(tiny_model: Path, pidistill_home: Path, tmp_path: Path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    cfg = load_config("demo", [*SMALL, "seeds=[0]", f"model.name_or_path={empty}"])
    with pytest.raises(Exception):
        experiment_flow(cfg, run_id="broken")
    df = query("select status, error from runs where run_id = 'broken'")
    assert df.status.tolist() == ["failed"] and df.error.iloc[0]
