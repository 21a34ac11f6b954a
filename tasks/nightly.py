"""The nightly's steps: check the presets, record each run's arms, publish the comparison, judge the night.

How nightly runs are marked: each preset runs as an ordinary experiment (a subflow) whose run_id is
`<nightly_id>-<preset>`, with nightly_id = `nightly-<UTC yyyymmdd-HHMMSS>-<hex>` naming the night. So
`select * from runs where run_id like 'nightly-%'` lists them, their outputs live under
`$PIDISTILL_HOME/<run_id>/` like any run's, and the `runs` schema (and older parquet) is unchanged.

Artifacts on the nightly flow run: `nightly-comparison` (a table, one row per preset x arm) and
`nightly-report` (markdown: the verdicts, regressions first, and the presets that failed). The keys are
fixed, so the Artifacts page keeps one history per key across nights. How nights are compared: analysis.nightly.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from analysis.nightly import arm_rows, comparison, pp, table_rows, to_markdown
from analysis.report import build_report
from experiments.config import ConfigError, ExperimentConfig, load_config, preset_names
from storage.home import home_dir
from storage.writer import write_rows

NIGHTLY_PREFIX = "nightly-"
TABLE_KEY = "nightly-comparison"
REPORT_KEY = "nightly-report"


class NightlyFailed(RuntimeError):
    """The nightly ran to the end but a preset failed or (with fail_on_regression) an arm regressed."""


def new_nightly_id(started_at: datetime) -> str:
    """`nightly-20260102-020000-3f2a`: sorts by start time; its runs are `<nightly_id>-<preset>`."""
    return f"{NIGHTLY_PREFIX}{started_at.astimezone(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def resolve_presets(
    presets: list[str], smoke: bool = False, overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, ExperimentConfig]:
    """The configs the nightly will run, by preset; raises ConfigError naming any bad preset or override.

    Only preset names are accepted (not YAML paths): a night is compared with earlier nights by
    experiment name and config hash, so the set of experiments has to be stable and named."""
    if isinstance(presets, str):
        presets = [presets]
    if not presets:
        raise ConfigError(f"presets: list at least one preset; presets: {', '.join(preset_names())}")
    known = set(preset_names())
    unknown = [p for p in presets if p not in known]
    if unknown:
        raise ConfigError(
            f"presets: unknown preset{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; presets: {', '.join(preset_names())}"
        )
    twice = sorted({p for p in presets if presets.count(p) > 1})
    if twice:
        raise ConfigError(f"presets: {', '.join(map(repr, twice))} listed more than once")
    configs = {}
    for name in presets:
        try:
            configs[name] = load_config(name, list(overrides), smoke_scale=smoke)
        except ConfigError as exc:
            raise ConfigError(f"preset {name!r}: {exc}") from None
    return configs


@task(name="record-nightly-arms", cache_policy=NO_CACHE)
def record_arms(run_id: str, nightly_id: str, nightly_started_at: datetime, preset: str, smoke: bool) -> int:
    """Write the run's per-arm estimates to `<run>/nightly_arms/arms.parquet`; returns the number of arms."""
    rows = arm_rows(build_report(run_id), nightly_id, nightly_started_at, preset, smoke)
    write_rows(home_dir() / run_id / "nightly_arms" / "arms.parquet", rows, "nightly_arms", readers=home_dir())
    return len(rows)


@task(name="publish-nightly", cache_policy=NO_CACHE)
def publish(nightly_id: str, failures: dict[str, str], presets: list[str], smoke: bool) -> list[dict]:
    """Publish the night's comparison (from the `nightly` view) as table and markdown artifacts."""
    rows = comparison(nightly_id)
    if rows:
        create_table_artifact(
            table=table_rows(rows),
            key=TABLE_KEY,
            description=f"{nightly_id}: each arm's Δpp vs the previous night (regressions flagged)",
        )
    create_markdown_artifact(
        markdown=to_markdown(nightly_id, rows, failures, presets, smoke),
        key=REPORT_KEY,
        description=f"nightly {nightly_id}",
    )
    return rows


def judge(nightly_id: str, rows: list[dict], failures: dict[str, str], fail_on_regression: bool) -> None:
    """Log each arm's verdict; raise NightlyFailed when a preset failed or (fail_on_regression) an arm regressed."""
    log = get_run_logger()
    for r in rows:
        log.info(f"{r['preset']}/{r['arm']}: {r['verdict']} (Δpp {pp(r['delta_pp'])}, before {pp(r['prev_delta_pp'])})")
    regressions = [
        f"{r['preset']}/{r['arm']} {r['change_pp']:+.1f}pp (± {r['change_ci_pp']:.1f})"
        for r in rows
        if r["verdict"] == "regression"
    ]
    problems = []
    if failures:
        problems.append(f"{len(failures)} preset(s) failed: {', '.join(failures)}")
    if regressions and fail_on_regression:
        problems.append(f"{len(regressions)} regression(s): {'; '.join(regressions)}")
    if problems:
        raise NightlyFailed(f"{nightly_id}: " + "; ".join(problems))
