"""A finished run sent to MLflow (`tracking.mlflow: true`, or `pidistill track RUN_ID`), off by default.

    >>> send_to_mlflow("demo-20261204-104512-3f2a")        # the store and experiment of the defaults
    'sqlite:////home/me/runs/_mlflow/mlflow.db, experiment demo, run 9c2e41d0...'

One MLflow run per pidistill run, named by its run id, in the experiment `tracking.mlflow_experiment`
(default: the config's name). What it holds, all read back from the run's tables and report:

- tags `pidistill.run_id`, `.experiment`, `.config_hash`, `.code_version`, `.data_hash`, `.status`,
  `.smoke` (the `runs` row); params: the stored config, flattened to dotted keys (lists as JSON);
- metrics with step = round (0: the base model): `pass1/<arm>` (held-out pass@1 over seeds and problems,
  the report's number), `pass1_seed<s>/<arm>` (one seed's mean over problems), `train_loss_seed<s>/<arm>`
  (`trainings.final_loss`) and `train_loss/<arm>` (its mean over seeds); without a step, the `arm_results`
  row: `delta_pp/<arm>`, `delta_pp_ci_low/<arm>`, `delta_pp_ci_high/<arm>`, `p_value/<arm>`. The seed is in
  the first part, not a last one (`pass1/<arm>/seed0`): the file store keeps a metric in a file named by its
  key, so no key may be another's folder; and MLflow's UI groups charts by that first part;
- artifacts: `report/` (report.md, report.html, the plots) and `config.json`.

Sending a run again (a resumed run's report, or `pidistill track`) replaces its MLflow run: the earlier one
goes to the store's deleted runs, so the experiment never shows one pidistill run twice.

Where: `tracking.mlflow_uri`, else $MLFLOW_TRACKING_URI, else `sqlite:///$PIDISTILL_HOME/_mlflow/mlflow.db`
with artifacts beside it. MLflow (3.7+) defaults to SQLite and refuses its old file store (`./mlruns`)
unless MLFLOW_ALLOW_FILE_STORE=true; the SQLite store needs SQLAlchemy and Alembic, which Prefect brings.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.report import Report, arm_result_rows, build_report, write_report
from domains.errors import NotRetryable
from experiments.config import TrackingConfig
from storage.catalog import query
from storage.home import home_dir

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

INSTALL_HINT = "pip install 'pidistill[mlflow]' (or mlflow-skinny)"
_STATUS = {"completed": "FINISHED", "failed": "FAILED"}  # runs.status -> MLflow's; a running one stays RUNNING
_MAX_PARAM = 6000  # MLflow's longest param value (the whole config is also the artifact config.json)


class TrackingError(NotRetryable, RuntimeError):
    """MLflow cannot take the run: not installed, the store unreachable or refusing; the message says which."""


@functools.cache
def mlflow_available() -> bool:
    """Whether MLflow is installed (checked once, without importing it: that takes a second or two)."""
    return importlib.util.find_spec("mlflow") is not None


def mlflow_uri(tracking: TrackingConfig | None = None, home: Path | None = None) -> str:
    """The tracking URI a run is sent to: the config's, else $MLFLOW_TRACKING_URI, else the home's SQLite store."""
    uri = (tracking.mlflow_uri if tracking else None) or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(home or home_dir()) / '_mlflow' / 'mlflow.db'}"


def check_mlflow(uri: str) -> None:
    """Open the store at `uri` (a server: one request, no retries); raises TrackingError naming what is wrong.
    Run at preflight, before a run spends any compute."""
    if not mlflow_available():
        raise TrackingError(f"MLflow is not installed: {INSTALL_HINT}, or set tracking.mlflow=false")
    try:
        if uri.startswith(("http://", "https://")):
            _probe_server(uri)
        else:
            _client(uri).search_experiments(max_results=1)
    except TrackingError:
        raise
    except Exception as exc:  # MLflow's, SQLAlchemy's and requests' errors alike: say which store and why
        raise TrackingError(f"MLflow cannot open the store {uri}: {_why(exc)}") from exc


def send_to_mlflow(
    run_id: str,
    uri: str | None = None,
    experiment: str | None = None,
    home: Path | None = None,
    report: Report | None = None,
) -> str:
    """Send `run_id` (its report: `report`, else built now) to MLflow; returns where it went, in words.
    Raises TrackingError; KeyError (analysis.report's) when the run does not exist or has nothing to report."""
    if not mlflow_available():
        raise TrackingError(f"MLflow is not installed: {INSTALL_HINT}")
    home = home or home_dir()
    uri = uri or mlflow_uri(None, home)
    report = report or build_report(run_id, home)
    run = query("SELECT * FROM runs WHERE run_id = $run_id", home, {"run_id": run_id}).iloc[0].to_dict()
    folder = home / run_id / "report"
    if not (folder / "report.html").exists():
        write_report(report, home)
    try:
        client = _client(uri)
        experiment_id = _experiment_id(client, uri, experiment or run["experiment"])
        mlflow_run = _replace_run(client, experiment_id, run)
        client.log_batch(mlflow_run, metrics=_metrics(report, home), params=_params(run), tags=_tags(run))
        client.log_text(mlflow_run, json.dumps(json.loads(run["config_json"]), indent=2), "config.json")
        client.log_artifacts(mlflow_run, str(folder), artifact_path="report")
        if run["status"] != "running":
            client.set_terminated(mlflow_run, _STATUS.get(run["status"], "FAILED"), _ms(run["finished_at"]))
    except Exception as exc:
        raise TrackingError(f"MLflow at {uri}: could not send run {run_id}: {_why(exc)}") from exc
    return f"{uri}, experiment {experiment or run['experiment']}, run {mlflow_run}"


def _client(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    if db := _local_sqlite(uri):
        db.parent.mkdir(parents=True, exist_ok=True)  # SQLite makes the file, not its folder
    return MlflowClient(tracking_uri=uri)


def _local_sqlite(uri: str) -> Path | None:
    """The database file of a local SQLite URI (sqlite:///relative or sqlite:////absolute), else None."""
    path = uri.removeprefix("sqlite:///")
    return Path(path) if path != uri and path and path != ":memory:" else None


def _probe_server(uri: str) -> None:
    """One request to an MLflow server (the client alone retries for minutes before it gives up)."""
    from mlflow.utils.credentials import get_default_host_creds  # MLflow's own reading of MLFLOW_TRACKING_TOKEN ...
    from mlflow.utils.rest_utils import http_request

    response = http_request(
        get_default_host_creds(uri),
        "/api/2.0/mlflow/experiments/search",
        "GET",
        max_retries=0,
        timeout=10,
        params={"max_results": 1},
    )
    if response.status_code != 200:
        raise TrackingError(f"the MLflow server at {uri} answered {response.status_code}: {response.text[:300]}")


def _why(exc: BaseException) -> str:
    """An exception as one line, its type first (MLflow's messages can run to paragraphs)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:600]}{'...' if len(text) > 600 else ''}"


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    """The experiment's id, creating it (in a local SQLite store with its artifacts beside the database)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    db = _local_sqlite(uri)
    artifacts = (db.parent / "artifacts" / re.sub(r"[^\w.-]", "_", name)).resolve().as_uri() if db else None
    try:
        return str(client.create_experiment(name, artifact_location=artifacts))
    except MlflowException as exc:  # another run created it meanwhile
        if exc.error_code != "RESOURCE_ALREADY_EXISTS" or (found := client.get_experiment_by_name(name)) is None:
            raise
        return str(found.experiment_id)


def _replace_run(client: MlflowClient, experiment_id: str, run: dict[str, Any]) -> str:
    """A new MLflow run for `run`, its earlier ones deleted (one MLflow run per pidistill run)."""
    earlier = client.search_runs([experiment_id], filter_string=f"tags.`pidistill.run_id` = '{run['run_id']}'")
    for old in earlier:
        client.delete_run(old.info.run_id)
    created = client.create_run(experiment_id, start_time=_ms(run["started_at"]), run_name=run["run_id"])
    return str(created.info.run_id)


def _tags(run: dict[str, Any]) -> list:
    from mlflow.entities import RunTag

    keys = ("run_id", "experiment", "config_hash", "code_version", "data_hash", "status", "smoke")
    return [RunTag(f"pidistill.{k}", str(run[k])) for k in keys]


def _params(run: dict[str, Any]) -> list:
    """The stored config as dotted keys; values as JSON (lists, null, true) except plain strings."""
    from mlflow.entities import Param

    def flat(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
        return out

    items = flat(json.loads(run["config_json"])).items()
    return [Param(k, (v if isinstance(v, str) else json.dumps(v))[:_MAX_PARAM]) for k, v in items]


def _metrics(report: Report, home: Path) -> list:
    """pass@1 by arm and round (and per seed), training losses by round, each arm's Δpp vs base."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    out = [Metric(_key("pass1", a.arm), e.mean, now, r) for a in report.arms for r, e in a.by_round]
    params = {"run_id": report.run_id}
    seeds = query(
        """SELECT arm, seed, round, avg(n_pass / n) AS pass1 FROM evaluations WHERE run_id = $run_id
           GROUP BY ALL ORDER BY ALL""",
        home,
        params,
    )  # a seed's row of the report's seeds x problems matrix, averaged
    out += [Metric(_key(f"pass1_seed{s.seed}", s.arm), s.pass1, now, int(s.round)) for s in seeds.itertuples()]
    losses = query(
        """SELECT arm, seed, round, final_loss FROM trainings WHERE run_id = $run_id AND final_loss IS NOT NULL
           ORDER BY ALL""",
        home,
        params,
    )
    out += [
        Metric(_key(f"train_loss_seed{t.seed}", t.arm), t.final_loss, now, int(t.round)) for t in losses.itertuples()
    ]
    for (arm, rnd), loss in losses.groupby(["arm", "round"]).final_loss.mean().items():
        out.append(Metric(_key("train_loss", str(arm)), float(loss), now, int(rnd)))
    for row in arm_result_rows(report):
        for name, column in (
            ("delta_pp", "delta_pp"),
            ("delta_pp_ci_low", "ci_low_pp"),
            ("delta_pp_ci_high", "ci_high_pp"),
            ("p_value", "p_value"),
        ):
            out.append(Metric(_key(name, row["arm"]), float(row[column]), now, 0))
    return out


def _key(*parts: str) -> str:
    """A metric key MLflow takes: parts joined by '/', any character but [\\w.\\- ] as '_' (arm names pass as they are)."""
    return "/".join(re.sub(r"[^\w.\- ]", "_", p) for p in parts)


def _ms(t: Any) -> int | None:
    """A `runs` timestamp as MLflow's milliseconds since the epoch."""
    return None if t is None or t != t else int(t.timestamp() * 1000)
