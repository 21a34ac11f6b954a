"""Stage `report`: the run's report files, its Prefect artifacts (shown on the flow run's page), and the
run sent to the experiment tracker the config names (`tracking`; none by default)."""

from __future__ import annotations

import re

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from analysis.report import Report, arm_result_rows, build_report, table_rows, to_markdown, write_report
from analysis.tracking import TrackingError, mlflow_uri, send_to_mlflow
from experiments.config import TrackingConfig
from storage.home import home_dir
from storage.writer import write_rows
from tasks.runs import run_logger


def _artifact_key(run_id: str, what: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"{run_id}-{what}".lower())[:100]


@task(name="report", cache_policy=NO_CACHE)
def publish_report(run_id: str, tracking: TrackingConfig | None = None) -> list[dict]:
    """Write <run>/report/report.{md,html} and the `arm_results` rows (the summary view's intervals), publish
    the table and the report as artifacts, send the run to the tracker `tracking` names; returns the table."""
    report = build_report(run_id)
    path = write_report(report)
    write_rows(
        home_dir() / run_id / "arm_results" / "arms.parquet", arm_result_rows(report), "arm_results", readers=home_dir()
    )
    rows = table_rows(report)
    create_table_artifact(
        table=rows,
        key=_artifact_key(run_id, "summary"),
        description=f"{report.experiment}: Δpp vs base with 95% CI per arm",
    )
    create_markdown_artifact(
        markdown=to_markdown(report, image_dir=None) + f"\n\nFull report: `{path}`",
        key=_artifact_key(run_id, "report"),
        description=f"report of {run_id}",
    )
    track_run(report, tracking)
    return rows


def track_run(report: Report, tracking: TrackingConfig | None) -> None:
    """Send the reported run to MLflow when `tracking.mlflow` is on. The run is complete by now: a tracker that
    fails is a warning, not a failed run, and `pidistill track RUN_ID` sends it again."""
    if tracking is None or not tracking.mlflow:
        return
    log = run_logger()
    try:
        where = send_to_mlflow(report.run_id, mlflow_uri(tracking), tracking.mlflow_experiment, report=report)
    except TrackingError as exc:
        log.warning(f"{exc}. The run is complete; send it again with `pidistill track {report.run_id}`")
        return
    log.info(f"sent to MLflow: {where}")
