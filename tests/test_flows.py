"""Whole experiments through Prefect (ephemeral mode): tiny model, real training, real DuckDB.

One small config is run twice (two run ids) and shared by the tests of this module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from experiments.config import load_config
from flows.experiment import experiment_flow
from storage.catalog import query

pytestmark = pytest.mark.slow

SMALL = [
    "seeds=[0, 1]",
    "rounds=1",
    "domain.train_size=24",
    "domain.eval_size=40",
    "sampling.n=3",
    "train.epochs=1",
    "train.batch_size=8",
    "retry.max_retries=2",
    "retry.feedback=previous_attempt",
    "arms=[{name: no-train, set: {train.method: none, retry.max_retries: 0}},"
    " {name: rft, set: {retry.max_retries: 0}}, {name: double-sample, set: {retry.strategy: resample}},"
    " {name: retry}]",
]
ARMS = ["double-sample", "no-train", "retry", "rft"]


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
    assert sorted(r["arm"] for r in summary) == ARMS
    for r in summary:
        assert r["seeds"] == 2 and r["rounds"] == 1
        assert 0.0 < r["base_pass1"] < 1.0
        assert r["config_hash"] and r["code_version"] and r["data_hash"]
    no_train = next(r for r in summary if r["arm"] == "no-train")
    assert no_train["delta_pp"] == 0.0 and no_train["ci95_pp"] == "[+0.0, +0.0]"  # greedy eval, untouched model


def test_attempts_cover_every_arm_seed_round_with_both_verdicts(home):
    df = query("""select arm, seed, round, count(*) n, avg(passed::int) p from attempts
                  where run_id = 'small-a' and phase = 'train' and attempt_idx = 0 group by all order by all""")
    assert df[["arm", "seed", "round"]].values.tolist() == [[a, s, 1] for a in ARMS for s in (0, 1)]
    assert (df.n == 24 * 3).all()
    assert ((df.p > 0) & (df.p < 1)).all()


def test_follow_ups_link_to_failed_parents_and_each_failed_first_try_gets_k(home):
    """demo's retry.budget fixed: a chain whose follow-up passed goes on from its last failed attempt, so a
    follow-up's parent is a failed attempt at a lower level (not always one lower), and both arms spend
    exactly K = 2 on every failed first try (the report's follow-up budget)."""
    from analysis.report import follow_up_budget

    df = query("""select a.arm, a.attempt_idx, a.pi_kind, a.pi_text, p.completion parent_completion,
                         p.passed parent_passed, p.attempt_idx parent_idx, a.prompt = p.prompt same_prompt
                  from attempts a join attempts p on a.parent_id = p.attempt_id
                  where a.run_id = 'small-a' and a.attempt_idx > 0""")
    df["pi_is_parent"] = [pi == (c.strip() or "(empty)") for pi, c in zip(df.pi_text, df.parent_completion)]
    assert set(df.arm) == {"retry", "double-sample"}
    assert not df.parent_passed.any() and (df.attempt_idx > df.parent_idx).all()
    assert (df[df.attempt_idx == 1].parent_idx == 0).all()
    budget = follow_up_budget("small-a").set_index("arm")
    assert (budget.loc[["retry", "double-sample"], ["fewest", "most"]] == 2).all().all(), budget
    retry, resample = df[df.arm == "retry"], df[df.arm == "double-sample"]
    assert (retry.pi_kind == "previous_attempt").all() and retry.pi_is_parent.all()
    assert resample.pi_kind.isna().all() and resample.same_prompt.all()
    orphans = query("""select count(*) n from attempts a where run_id = 'small-a' and attempt_idx > 0
                       and not exists (select 1 from attempts p where p.attempt_id = a.parent_id)""")
    assert orphans.n.tolist() == [0]
    n = query("""select arm, max(attempt_idx) k from attempts where run_id = 'small-a' and phase = 'train'
                 group by arm order by arm""")
    assert dict(zip(n.arm, n.k)) == {"double-sample": 2, "no-train": 0, "retry": 2, "rft": 0}


def test_verify_says_whether_a_retry_copies_its_pi_and_leaves_attempts_without_pi_null(home):
    """copies_pi and pi_overlap through the real flow: measured for every retry shown PI (here its own previous
    attempt: never a copy), NULL for first tries, the double-sample control's second tries and evaluation."""
    df = query("""select arm, phase, attempt_idx > 0 as follow_up, count(*) n, count(copies_pi) measured,
                         count(*) filter (where copies_pi) copies, count(pi_overlap) n_overlaps
                  from attempts where run_id = 'small-a' group by all order by all""")
    shown_pi = df[(df.arm == "retry") & df.follow_up]
    assert len(shown_pi) == 1 and (shown_pi.measured == shown_pi.n).all() and (shown_pi.copies == 0).all()
    assert shown_pi.n_overlaps.iloc[0] > 0  # a failed attempt long enough to have 8-grams
    rest = df.drop(shown_pi.index)
    assert (rest.measured == 0).all() and (rest.n_overlaps == 0).all()


def test_rejected_attempts_keep_their_reason(home):
    df = query("""select accepted, reject_reason, count(*) n from attempts
                  where run_id = 'small-a' and phase = 'train' group by all""")
    reasons = set(df.reject_reason.dropna())
    assert "failed" in reasons and reasons <= {"failed", "duplicate", "no_answer"}
    assert df[df.accepted].reject_reason.isna().all()
    assert df[~df.accepted].reject_reason.notna().all()
    # no_answer: a completion with no answer in the domain's format (arith: no '####'), never a wrong answer
    no_answer = query("""select completion, fail_reason from attempts
                         where run_id = 'small-a' and reject_reason = 'no_answer'""")
    assert (no_answer.fail_reason == "no_answer").all()
    assert not no_answer.completion.str.contains("####").any()


def test_eval_rows_base_and_rounds(home):
    df = query("""select arm, round, count(*) n, sum(n) samples from evaluations
                  where run_id = 'small-a' and seed = 0 group by all order by all""")
    assert df.values.tolist() == [[a, r, 40, 40] for a in ARMS for r in (0, 1)]
    evals = query("select count(*) n from attempts where run_id = 'small-a' and phase = 'eval'")
    assert evals.n.tolist() == [4 * 2 * 2 * 40]  # arms x seeds x (base + round 1) x problems


def test_training_rows_and_sft_examples_match_accepted_attempts(home):
    tr = query(
        "select arm, seed, method, n_examples, steps, checkpoint from trainings where run_id = 'small-a' order by all"
    )
    assert tr.method.tolist() == ["sft", "sft", "none", "none", "sft", "sft", "sft", "sft"]
    trained = tr[tr.method == "sft"]
    assert (trained.steps > 0).all() and all(Path(c).is_dir() for c in trained.checkpoint)
    acc = query("""select arm, seed, count(*) n from attempts where run_id = 'small-a' and accepted
                   and arm != 'no-train' group by all order by all""")
    ex = query("select arm, seed, count(*) n from sft_examples where run_id = 'small-a' group by all order by all")
    assert acc.values.tolist() == ex.values.tolist()
    assert tr[tr.method == "sft"].n_examples.tolist() == ex.n.tolist()
    # Lineage is what a trainer saw: the arm that trains nothing accepted attempts but has no examples.
    assert (tr[tr.method == "none"].n_examples == 0).all()
    assert query("select count(*) n from attempts where run_id = 'small-a' and arm = 'no-train' and accepted").n[0] > 0
    # The training prompt is the original prompt: the first try's, never one carrying PI.
    joined = query("""select a.arm, a.attempt_idx, e.completion = a.completion same_completion,
                             e.prompt = root.prompt original_prompt,
                             a.pi_text is not null and a.pi_text != '' and contains(e.prompt, a.pi_text) leaked,
                             contains(e.prompt, 'wrong') mentions_retry
                      from sft_examples e join attempts a using (run_id, attempt_id)
                      join attempts root on root.run_id = a.run_id and root.arm = a.arm and root.seed = a.seed
                           and root.round = a.round and root.problem_id = a.problem_id
                           and root.attempt_idx = 0 and root.sample_idx = 0 and root.phase = 'train'
                      where e.run_id = 'small-a'""")
    assert joined.same_completion.all() and joined.original_prompt.all()
    assert not joined.leaked.any() and not joined.mentions_retry.any()
    assert (joined[joined.arm == "retry"].attempt_idx > 0).any()  # some accepted examples are retries


def test_runs_record_lineage(home):
    df = query("select run_id, status, config_hash, code_version, data_hash, finished_at from runs order by run_id")
    assert df.run_id.tolist() == ["small-a", "small-b"]
    assert (df.status == "completed").all() and df.finished_at.notna().all()
    assert df.config_hash.nunique() == 1 and df.data_hash.nunique() == 1
    assert (df.code_version.str.len() > 0).all()


def test_same_config_and_seed_give_identical_completions(home):
    df = query("""select run_id, md5(string_agg(completion, '|' order by arm, seed, round, phase, problem_id,
                                                 attempt_idx, sample_idx, completion)) h, count(*) n
                  from attempts group by run_id order by run_id""")
    assert df.n.tolist()[0] == df.n.tolist()[1] and df.h.nunique() == 1


def test_no_temp_files_left(home):
    assert not [p for p in home.rglob("*") if ".tmp-" in p.name]


def test_cli_run_and_sql(tiny_model: Path, pidistill_home: Path, capsys):
    assert (
        main(
            [
                "run",
                "demo",
                "--run-id",
                "cli-1",
                "--set",
                "seeds=[3]",
                "--set",
                "arms=[{name: rft}]",
                *[a for s in SMALL[1:-1] for a in ("--set", s)],
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "rft" in out and "Δpp vs base" in out
    assert (
        main(["sql", "select arm, seed, round, count(*) n, avg(passed::int) p from attempts group by all order by all"])
        == 0
    )
    table = capsys.readouterr().out
    assert "rft" in table and "seed" in table
    assert main(["run", "demo", "--run-id", "cli-1"]) == 2  # the id exists: refuse, write nothing
    assert main(["sql", "select * from nope"]) == 2


def test_compute_view_accounts_per_arm(home):
    df = query("select * from compute where run_id = 'small-a' order by arm").set_index("arm")
    assert list(df.index) == ARMS
    assert (df.seeds == 2).all() and (df.tokens_sampled > 0).all() and (df.verifier_calls > 0).all()
    # follow-ups cost samples: the retry arms sampled more than plain rejection sampling
    assert df.loc["retry", "samples"] > df.loc["rft", "samples"] == 2 * 24 * 3
    assert df.loc["no-train", "train_steps"] == 0 and df.loc["rft", "train_steps"] > 0


def test_failed_run_is_marked_failed(tiny_model: Path, pidistill_home: Path, tmp_path: Path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    cfg = load_config("demo", [*SMALL, "seeds=[0]", f"model.name_or_path={empty}"])
    with pytest.raises(ValueError, match="Unrecognized model"):  # transformers: an empty folder is no model
        experiment_flow(cfg, run_id="broken")
    df = query("select status, error from runs where run_id = 'broken'")
    assert df.status.tolist() == ["failed"] and df.error.iloc[0].startswith("ValueError: Unrecognized model")


def test_report_numbers_equal_the_summary_view_and_sql_over_attempts(home):
    from analysis.report import build_report

    report = build_report("small-a")
    view = query("select * from summary where run_id = 'small-a'").set_index("arm")
    # recomputed from the raw eval attempts, not from the evaluations table the report reads
    raw = query("""select arm, seed, round, avg(passed::int) p from attempts
                   where run_id = 'small-a' and phase = 'eval' group by all""")
    for a in report.arms:
        row = view.loc[a.arm]
        assert a.base_pass1 == pytest.approx(row.base_pass1) and a.final_pass1 == pytest.approx(row.final_pass1)
        assert a.delta.mean * 100 == pytest.approx(row.delta_pp) and a.seeds == row.seeds
        mine = raw[raw.arm == a.arm]
        assert a.base_pass1 == pytest.approx(mine[mine["round"] == 0].p.mean())
        assert a.final_pass1 == pytest.approx(mine[mine["round"] == a.rounds].p.mean())
        assert a.delta.low <= a.delta.mean <= a.delta.high and a.delta.n_problems == 40
        assert row.config_hash and row.code_version and row.data_hash
        # the interval and p-value the report computed (issue 15: the summary had point estimates only)
        assert (row.ci_low_pp, row.ci_high_pp) == pytest.approx((a.delta.low * 100, a.delta.high * 100))
        assert row.p_value == pytest.approx(a.delta.p_value) and row.reference_arm == report.reference
        assert not row.smoke
    assert report.reference == "no-train" and report.arms[0].vs_reference is None
    rej = report.rejects.groupby("arm").attempts.sum()
    trained = query("select arm, count(*) n from attempts where run_id = 'small-a' and phase = 'train' group by arm")
    assert rej.to_dict() == dict(zip(trained.arm, trained.n))


def test_report_separates_first_tries_from_retries_and_shows_a_retry_chain(home):
    """Issue 15: the key number of a retry experiment, what each arm changes, and one chain end to end."""
    from analysis.report import build_report, to_html, to_markdown

    report = build_report("small-a")
    levels = report.levels.set_index(["arm", "level"])
    assert set(levels.loc["retry"].index) >= {0, 1} and set(levels.loc["rft"].index) == {0}
    sql = query("""select count(*) n from attempts where run_id = 'small-a' and phase = 'train'
                   and arm = 'retry' and attempt_idx > 0""")
    assert levels.loc["retry"].query("level > 0").attempts.sum() == sql.n[0]
    assert "train.method=" in report.arm_changes["no-train"] and report.arm_changes["rft"] == "retry.max_retries=0"
    chain = report.retry_chain
    assert chain is not None and chain.arm == "retry"  # a retry that saw something, not the control
    failed = query(
        "select passed from attempts where run_id = 'small-a' and prompt = $p and completion = $c",
        params={"p": chain.prompt, "c": chain.failed},
    )
    assert not failed.passed.any() and chain.retry_prompt != chain.prompt
    md, html = to_markdown(report), to_html(report)
    assert "## First tries and retries" in md and "The accepted retry:" in md and "<pre>" in html
    assert "| arm | failed_first_tries | follow_ups | per_failed_first_try | fewest | most |" in md
    assert "`" not in html.split("<title>")[1].split("</title>")[0]
    assert "| measure |" in md  # compute with arms as columns: fits the page


def test_report_files_render_and_artifacts_are_published(home, tmp_path):
    from analysis.report import build_report, write_report
    from analysis.screenshot import chromium, screenshot

    path = write_report(build_report("small-a"))
    html = path.read_text()
    assert path.name == "report.html" and "data:image/png;base64," in html and "Δpp" in html
    assert (path.parent / "report.md").exists() and (path.parent / "pass_by_round.png").stat().st_size > 5000
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        keys = {
            a.key
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["small-a-summary", "small-a-report"]))
            )
        }
    assert keys == {"small-a-summary", "small-a-report"}
    if chromium() is None:
        pytest.skip("no chromium here: report.html was not rendered (make report-screenshot installs it)")
    png = screenshot(path, tmp_path / "report.png")
    assert png.stat().st_size > 50_000  # a page with tables and a plot, not a blank one


def test_every_sampled_attempt_carries_its_provenance_and_resamples_exactly(home):
    """Provenance (issue: re-score or re-sample one attempt): every attempt has whole token ids, their hash,
    its seed and key and the weights' digest; a trained round's weights differ from the base's, an untrained
    arm's do not; a first try, a retry and an evaluation sample drawn again from their rows are the same."""
    from models.sampling import release_samplers
    from tasks.resample import resample_attempt

    df = query("""select phase, count(*) n,
                         count(*) filter (where len(completion_token_ids) = n_completion_tokens) ids,
                         count(*) filter (where completion_token_sha
                                          = left(sha256(array_to_string(completion_token_ids, ':')), 16)) sha,
                         count(prompt_token_sha) prompts, count(sampler_seed) seeds, count(sample_key) keys,
                         count(policy_digest) digests
                  from attempts where run_id = 'small-a' group by phase""")
    assert set(df.phase) == {"train", "eval"}
    for r in df.itertuples():
        assert r.n == r.ids == r.sha == r.prompts == r.seeds == r.keys == r.digests, r
    digest = query("""select arm, round, any_value(policy_digest) d, count(distinct policy_digest) k
                      from attempts where run_id = 'small-a' and phase = 'eval' and seed = 0 group by all""")
    d = {(r.arm, r.round): r.d for r in digest.itertuples()}
    assert (digest.k == 1).all()
    assert d["no-train", 1] == d["no-train", 0] == d["rft", 0] != d["rft", 1]
    picks = query("""select (select min(attempt_id) from attempts where run_id = 'small-a' and phase = 'train'
                             and attempt_idx = 0) first_try,
                            (select min(attempt_id) from attempts where run_id = 'small-a' and phase = 'train'
                             and attempt_idx = 1) retry,
                            (select min(attempt_id) from attempts where run_id = 'small-a' and phase = 'eval'
                             and arm = 'rft' and round = 1) evaluation""").iloc[0]
    try:
        for attempt_id in picks:
            row, again = resample_attempt(attempt_id)
            assert again.token_ids == tuple(row["completion_token_ids"]) and again.text == row["completion"]
    finally:
        release_samplers()


def test_every_query_of_the_sql_cookbook_runs_on_a_real_run(home):
    """docs/sql.md cannot rot: each ```sql block runs against the small experiment's catalog (issue 18),
    its placeholders filled with that run's id and config hash, and the per-run questions have rows."""
    import re

    cookbook = (Path(__file__).resolve().parent.parent / "docs" / "sql.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", cookbook, re.S)
    assert len(blocks) >= 25
    config_hash = query("select config_hash from runs where run_id = 'small-a'").config_hash[0]
    failed, empty = [], []
    for sql in blocks:
        filled = sql.replace("<run id>", "small-a").replace("<config hash>", config_hash)
        assert "<" not in re.sub(r"<=|<>|< ", "", filled), f"an unfilled placeholder in:\n{sql}"
        try:
            df = query(filled)
        except Exception as exc:  # every failing block is named at once
            failed.append(f"{exc}\n{sql}")
            continue
        if "'small-a'" in filled and not any(x in filled for x in NOT_IN_THIS_EXPERIMENT) and not len(df):
            empty.append(sql)
    assert failed == []
    assert empty == [], empty


# What the small arith experiment has none of: code flags, OPSD rollouts, diagnoses, sharded stages, retries
# that copy their PI (its retries are shown their own previous attempt).
NOT_IN_THIS_EXPERIMENT = ("flags is not null", "'opsd'", "'diagnosis'", "shard is not null", "and copies_pi\n")


def test_export_writes_a_dataset_that_load_dataset_reads(home, tmp_path, capsys):
    """`pidistill export RUN --to DIR` (issue 18): the run's attempts and SFT examples as an HF dataset,
    row for row what SQL sees, with a card naming the run; bad requests are clear errors."""
    import datasets

    dest = tmp_path / "export"
    assert main(["export", "small-a", "--to", str(dest)]) == 0
    for table in ("attempts", "sft_examples"):
        # its own cache: HF's default one is keyed on the folder's path, which pytest reuses across sessions
        ds = datasets.load_dataset(str(dest), table, split="train", cache_dir=str(tmp_path / "hf-cache"))
        want = query(f"select count(*) n from {table} where run_id = 'small-a'").n[0]
        assert len(ds) == want > 0
        assert set(ds.column_names) == set(query(f"select * from {table} limit 0").columns)
    run = query("select config_hash, code_version from runs where run_id = 'small-a'").iloc[0]
    card = (dest / "README.md").read_text()
    assert "small-a" in card and run.config_hash in card and run.code_version in card
    assert "| `attempt_idx` |" in card  # every column described
    capsys.readouterr()

    assert main(["export", "small-a", "--to", str(dest)]) == 2  # an export is there: --force replaces it
    assert "--force" in capsys.readouterr().err
    assert main(["export", "small-a", "--to", str(dest), "--force"]) == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert main(["export", "small-a", "--to", str(other), "--force"]) == 2  # never replaces a folder of yours
    assert "not a pidistill export" in capsys.readouterr().err and (other / "notes.txt").exists()
    assert main(["export", "no-such-run", "--to", str(tmp_path / "x")]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
    assert main(["export", "small-a", "--to", "hf://someone/dataset"]) == 2  # tests run offline: a clear no
    assert "could not push to hf://someone/dataset" in capsys.readouterr().err


def test_a_run_with_tracking_on_reaches_mlflow(tiny_model: Path, pidistill_home: Path, monkeypatch):
    """`--set tracking.mlflow=true` (issue 18): the finished run is one MLflow run in the home's store, with the
    report's pass@1 by round, the round's training loss, and the report's files."""
    from mlflow.tracking import MlflowClient  # `make setup` installs the mlflow extra

    from analysis.report import build_report
    from analysis.tracking import mlflow_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sets = ["seeds=[0]", "arms=[{name: rft}]", "tracking.mlflow=true", *SMALL[1:-1]]
    assert main(["run", "demo", "--run-id", "tracked", *[a for s in sets for a in ("--set", s)]]) == 0
    client = MlflowClient(mlflow_uri())
    experiment = client.get_experiment_by_name("demo")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.tags["pidistill.status"] == "completed"
    pass1 = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "pass1/rft"))
    (arm,) = build_report("tracked").arms
    assert [s for s, _ in pass1] == [0, 1] and [v for _, v in pass1] == pytest.approx([e.mean for _, e in arm.by_round])
    loss = query("select final_loss from trainings where run_id = 'tracked'").final_loss.tolist()
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train_loss_seed0/rft")] == pytest.approx(loss)
    assert "report/report.html" in {a.path for a in client.list_artifacts(run.info.run_id, "report")}
