"""The MLflow tracker against real MLflow stores in tmp dirs (SQLite, the default; the opt-in file store), on a
run written with the project's writer: what arrives (metrics with their steps, tags, params, artifacts), sending
again, off by default, and each way it fails (at preflight, or as a warning after a completed run).
Whole runs with `--set tracking.mlflow=true` are in tests/test_flows.py (slow)."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient

from analysis import tracking
from analysis.report import arm_result_rows, build_report
from analysis.tracking import mlflow_uri, send_to_mlflow
from cli.main import main
from experiments.config import ExperimentConfig, TrackingConfig
from storage.writer import write_rows
from tasks.report import track_run
from tasks.runs import PreflightError, check_resumable, preflight, write_run

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 13, tzinfo=UTC)
ARMS = ("no-train", "retry-feedback")
RUN = "demo-20260101-120000-abcd"


@pytest.fixture(autouse=True)
def no_user_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test names its store: a developer's own MLFLOW_TRACKING_URI must not receive test runs."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)


def _config() -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "demo",
            "rounds": 2,
            "seeds": [0, 1],
            "arms": [
                {"name": "no-train", "set": {"train.method": "none"}},
                {"name": "retry-feedback", "set": {"retry.max_retries": 1, "retry.feedback": "verifier_feedback"}},
            ],
        }
    )


def _write_run(home: Path, run_id: str = RUN) -> pd.DataFrame:
    """A completed two-arm, two-seed run, rounds 0-2, as the flow writes it; returns its evaluations."""
    config = _config()
    run = {
        "run_id": run_id,
        "experiment": config.name,
        "config_json": config.canonical_json(),
        "config_hash": config.config_hash(),
        "code_version": "c" * 40,
        "data_hash": "d1",
        "started_at": T0,
        "finished_at": T1,
        "status": "completed",
        "error": None,
        "smoke": False,
    }
    write_rows(home / run_id / "runs" / "run.parquet", [run], "runs")
    evaluations = pd.DataFrame(
        [
            {
                "run_id": run_id,
                "arm": arm,
                "seed": seed,
                "round": rnd,
                "problem_id": f"p{p}",
                "model_ref": "m",
                "n": 2,
                # retry-feedback improves each round, no-train stays; seeds differ
                "n_pass": min(2, int(p < 2 + seed + (rnd if arm == "retry-feedback" else 0))),
            }
            for arm in ARMS
            for seed in (0, 1)
            for rnd in (0, 1, 2)
            for p in range(8)
        ]
    )
    write_rows(home / run_id / "evaluations" / "all.parquet", evaluations.to_dict("records"), "evaluations")
    trainings = [
        {
            "run_id": run_id,
            "arm": arm,
            "seed": seed,
            "round": rnd,
            "method": "none" if arm == "no-train" else "sft",
            "init_model_ref": "m",
            "n_examples": 0 if arm == "no-train" else 10,
            "steps": 0 if arm == "no-train" else 4,
            "lr": 1e-5,
            "final_loss": None if arm == "no-train" else 2.0 / (rnd + seed),
            "checkpoint": "m",
            "seconds": 1.0,
        }
        for arm in ARMS
        for seed in (0, 1)
        for rnd in (1, 2)
    ]
    write_rows(home / run_id / "trainings" / "all.parquet", trainings, "trainings")
    return evaluations


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _only_run(client: MlflowClient, experiment: str = "demo"):
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    (run,) = client.search_runs([found.experiment_id])
    return run


def test_a_run_arrives_with_pass1_by_round_losses_tags_params_and_its_report(pidistill_home: Path):
    ev = _write_run(pidistill_home)
    send_to_mlflow(RUN)  # the defaults: the home's SQLite store, the config's name as the experiment

    uri = mlflow_uri()
    assert uri == f"sqlite:///{pidistill_home / '_mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = _only_run(client)
    mid = run.info.run_id
    assert run.info.run_name == RUN and run.info.status == "FINISHED"
    assert (run.info.start_time, run.info.end_time) == (int(T0.timestamp() * 1000), int(T1.timestamp() * 1000))
    tags = run.data.tags
    assert tags["pidistill.run_id"] == RUN and tags["pidistill.experiment"] == "demo"
    assert tags["pidistill.config_hash"] == _config().config_hash() and tags["pidistill.code_version"] == "c" * 40
    assert tags["pidistill.data_hash"] == "d1" and tags["pidistill.status"] == "completed"

    # pass@1 by round, step = round (0: the base model): sum(n_pass) / sum(n) over seeds and problems
    ev["rate"] = ev.n_pass / ev.n
    for arm in ARMS:
        expected = ev[ev.arm == arm].groupby("round").rate.mean()
        got = _history(client, mid, f"pass1/{arm}")
        assert [s for s, _ in got] == [0, 1, 2]
        assert [v for _, v in got] == pytest.approx(expected.tolist())
        for seed in (0, 1):
            per_seed = ev[(ev.arm == arm) & (ev.seed == seed)].groupby("round").rate.mean()
            assert [v for _, v in _history(client, mid, f"pass1_seed{seed}/{arm}")] == pytest.approx(per_seed.tolist())
    assert _history(client, mid, "pass1/retry-feedback")[2][1] > _history(client, mid, "pass1/retry-feedback")[0][1]
    report = build_report(RUN)  # the same numbers as the report's
    for a in report.arms:
        assert [v for _, v in _history(client, mid, f"pass1/{a.arm}")] == pytest.approx([e.mean for _, e in a.by_round])

    # training loss by round, per seed and its mean; an arm that does not train has none
    for key, expected in [("_seed0", [2.0, 1.0]), ("_seed1", [1.0, 2 / 3]), ("", [1.5, 5 / 6])]:
        got = _history(client, mid, f"train_loss{key}/retry-feedback")
        assert [s for s, _ in got] == [1, 2] and [v for _, v in got] == pytest.approx(expected)
    assert not any(k.startswith("train_loss") and k.endswith("/no-train") for k in run.data.metrics)
    for row in arm_result_rows(report):  # the summary: Δpp vs base with its interval, as in arm_results
        assert run.data.metrics[f"delta_pp/{row['arm']}"] == pytest.approx(row["delta_pp"])
        assert run.data.metrics[f"delta_pp_ci_low/{row['arm']}"] == pytest.approx(row["ci_low_pp"])

    # params: the stored config, dotted; lists as JSON
    params = run.data.params
    assert params["train.lr"] == "1e-05" and params["rounds"] == "2" and params["seeds"] == "[0, 1]"
    assert json.loads(params["arms"])[1]["name"] == "retry-feedback" and "tracking.mlflow" not in params

    # artifacts: the report folder (written now: the fixture run had none) and the config
    artifacts = {a.path for a in client.list_artifacts(mid)} | {a.path for a in client.list_artifacts(mid, "report")}
    assert {"config.json", "report/report.md", "report/report.html", "report/pass_by_round.png"} <= artifacts
    local = Path(client.download_artifacts(mid, "report/report.md", str(pidistill_home.parent)))
    assert local.read_text() == (pidistill_home / RUN / "report" / "report.md").read_text()
    # beside the database, not in the working directory's ./mlruns
    assert client.get_experiment_by_name("demo").artifact_location.startswith((pidistill_home / "_mlflow").as_uri())


def test_sending_a_run_again_replaces_its_mlflow_run(pidistill_home: Path):
    _write_run(pidistill_home)
    send_to_mlflow(RUN)
    send_to_mlflow(RUN)
    client = MlflowClient(mlflow_uri())
    run = _only_run(client)  # one active run, no doubled metric history
    assert [s for s, _ in _history(client, run.info.run_id, "pass1/no-train")] == [0, 1, 2]
    from mlflow.entities import ViewType

    experiment_id = client.get_experiment_by_name("demo").experiment_id
    assert len(client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)) == 1


def test_the_config_names_the_store_and_experiment(pidistill_home: Path, tmp_path: Path):
    _write_run(pidistill_home)
    uri = f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}"
    track_run(build_report(RUN), TrackingConfig(mlflow=True, mlflow_uri=uri, mlflow_experiment="sweeps"))
    assert _only_run(MlflowClient(uri), "sweeps").data.tags["pidistill.run_id"] == RUN
    assert not (pidistill_home / "_mlflow").exists()


def test_tracking_is_off_by_default_and_outside_the_config_hash(pidistill_home: Path):
    config = _config()
    assert config.tracking == TrackingConfig() and not config.tracking.mlflow
    _write_run(pidistill_home)
    track_run(build_report(RUN), config.tracking)
    assert not (pidistill_home / "_mlflow").exists()

    on = config.model_copy(update={"tracking": TrackingConfig(mlflow=True, mlflow_experiment="x")})
    assert on.config_hash() == config.config_hash() and on.canonical_json() == config.canonical_json()
    write_run(config, "resumable", "failed", T0)
    assert check_resumable(on, "resumable") is not None  # a run resumes with the tracker switched on
    with pytest.raises(ValueError, match=r"arms\[0\].set.tracking.mlflow: an arm cannot override 'tracking'"):
        ExperimentConfig.model_validate({"arms": [{"name": "a", "set": {"tracking.mlflow": True}}]})


def _on(uri: str | None = None) -> ExperimentConfig:
    return _config().model_copy(update={"tracking": TrackingConfig(mlflow=True, mlflow_uri=uri)})


def test_preflight_opens_the_store(pidistill_home: Path):
    preflight(_on())
    assert (pidistill_home / "_mlflow" / "mlflow.db").is_file()


def test_switched_on_without_mlflow_fails_at_preflight(monkeypatch: pytest.MonkeyPatch):
    # MLflow is installed in the test venv; the one way to see the message is to say it is not.
    monkeypatch.setattr(tracking, "mlflow_available", lambda: False)
    with pytest.raises(
        PreflightError, match=r"tracking.mlflow: MLflow is not installed: pip install 'pidistill\[mlflow\]'"
    ):
        preflight(_on("sqlite:///elsewhere.db"))


def test_an_unreachable_server_fails_at_preflight_naming_it():
    with socket.socket() as s:  # a port nothing listens on: connection refused, at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PreflightError, match=rf"MLflow cannot open the store http://127.0.0.1:{port}: "):
        preflight(_on(f"http://127.0.0.1:{port}"))


def test_the_file_store_needs_mlflows_opt_in(pidistill_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    uri = (tmp_path / "mlruns").as_uri()
    with pytest.raises(PreflightError, match="MLFLOW_ALLOW_FILE_STORE=true"):
        preflight(_on(uri))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    _write_run(pidistill_home)
    send_to_mlflow(RUN, uri)
    client = MlflowClient(uri)
    run = _only_run(client)
    assert [s for s, _ in _history(client, run.info.run_id, "pass1/retry-feedback")] == [0, 1, 2]
    assert "report" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_tracker_failing_after_the_run_is_a_warning(pidistill_home: Path, caplog: pytest.LogCaptureFixture):
    _write_run(pidistill_home)
    (pidistill_home / "not-a-folder").write_text("")
    uri = f"sqlite:///{pidistill_home / 'not-a-folder' / 'mlflow.db'}"
    with caplog.at_level(logging.WARNING):
        track_run(build_report(RUN), TrackingConfig(mlflow=True, mlflow_uri=uri))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"MLflow at {uri}: could not send run {RUN}" in warning and "FileExistsError" in warning
    assert f"send it again with `pidistill track {RUN}`" in warning


def test_pidistill_track_sends_an_existing_run(pidistill_home: Path, capsys: pytest.CaptureFixture):
    _write_run(pidistill_home)
    assert main(["track", RUN, "--experiment", "again"]) == 0
    assert f"sent {RUN} to MLflow" in capsys.readouterr().out
    assert _only_run(MlflowClient(mlflow_uri()), "again").data.tags["pidistill.run_id"] == RUN
    assert main(["track", "no-such-run"]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
