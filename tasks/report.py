"""Stage `report`: the run's report files and its Prefect artifacts (shown on the flow run's page)."""

from __future__ import annotations

import re

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from analysis.report import arm_result_rows, build_report, table_rows, to_markdown, write_report
from storage.home import home_dir
from storage.writer import write_rows


def _artifact_key(run_id: str, what: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"{run_id}-{what}".lower())[:100]


@task(name="report", cache_policy=NO_CACHE)
def publish_report(run_id: str) -> list[dict]:
    """Write <run>/report/report.{md,html} and the `arm_results` rows (the summary view's intervals), publish
    the table and the report as artifacts; returns the table."""
    report = build_report(run_id)
    path = write_report(report)
    write_rows(home_dir() / run_id / "arm_results" / "arms.parquet", arm_result_rows(report), "arm_results")
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
    return rows
