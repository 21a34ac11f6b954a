"""The nightly regression check: rerun presets, compare each arm with the previous night's run.

    nightly_flow(presets=["demo"], smoke=False)     # what the `nightly` deployment runs at 02:00 UTC

How nightly runs are marked: each preset runs as an ordinary experiment (a subflow) whose run_id is
`<nightly_id>-<preset>`, with nightly_id = `nightly-<UTC yyyymmdd-HHMMSS>-<hex>` naming the night. So
`select * from runs where run_id like 'nightly-%'` lists them, their outputs live under
`$PIDISTILL_HOME/<run_id>/` like any run's, and the `runs` schema (and older parquet) is unchanged.

How nights are compared: after each preset, its arms' Δpp vs base with the 95 % interval (analysis.report:
the paired two-way bootstrap over seeds and problems) go to the `nightly_arms` table. The catalog's
`nightly` view (storage/catalog.py) puts each arm next to the previous night of the same experiment, config
hash and arm, and flags the change as a regression (or improvement) when it lies outside ± sqrt(h² + h_prev²),
h being each night's interval half-width. The comparison published here is read from that view, so the
artifact and `select * from nightly` always agree.

Artifacts on the nightly flow run: `nightly-comparison` (a table, one row per preset x arm) and
`nightly-report` (markdown: the verdicts, regressions first, and the presets that failed). The keys are
fixed, so the Artifacts page keeps one history per key across nights.
"""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from analysis.report import Report, build_report
from experiments.config import ConfigError, ExperimentConfig, load_config, preset_names
from flows.deployments import NIGHTLY_PRESETS
from flows.experiment import experiment_flow
from storage.catalog import query
from storage.writer import home_dir, write_rows

NIGHTLY_PREFIX = "nightly-"
TABLE_KEY = "nightly-comparison"
REPORT_KEY = "nightly-report"


class NightlyFailed(RuntimeError):
    """The nightly ran to the end but a preset failed or (with fail_on_regression) an arm regressed."""


def new_nightly_id(started_at: datetime) -> str:
    """`nightly-20260102-020000-3f2a`: sorts by start time; its runs are `<nightly_id>-<preset>`."""
    return f"{NIGHTLY_PREFIX}{started_at.astimezone(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def resolve_presets(presets: list[str], smoke: bool = False, overrides: list[str] | tuple[str, ...] = ()
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
        raise ConfigError(f"presets: unknown preset{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))}; presets: {', '.join(preset_names())}")
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


def arm_rows(report: Report, nightly_id: str, nightly_started_at: datetime, preset: str, smoke: bool,
             created_at: datetime | None = None) -> list[dict]:
    """`nightly_arms` rows of one preset's run: each arm's Δpp vs base and its 95 % interval, in pp."""
    created_at = created_at or datetime.now(timezone.utc)
    return [{
        "nightly_id": nightly_id, "nightly_started_at": nightly_started_at, "preset": preset, "smoke": smoke,
        "run_id": report.run_id, "experiment": report.experiment, "config_hash": report.lineage["config_hash"],
        "arm": a.arm, "seeds": a.seeds, "rounds": a.rounds, "problems": a.delta.n_problems,
        "base_pass1": a.base_pass1, "final_pass1": a.final_pass1,
        "delta_pp": a.delta.mean * 100, "ci_low_pp": a.delta.low * 100, "ci_high_pp": a.delta.high * 100,
        "p_value": a.delta.p_value, "created_at": created_at,
    } for a in report.arms]


@task(name="record-nightly-arms", cache_policy=NO_CACHE)
def record_arms(run_id: str, nightly_id: str, nightly_started_at: datetime, preset: str, smoke: bool) -> int:
    """Write the run's per-arm estimates to `<run>/nightly_arms/arms.parquet`; returns the number of arms."""
    rows = arm_rows(build_report(run_id), nightly_id, nightly_started_at, preset, smoke)
    write_rows(home_dir() / run_id / "nightly_arms" / "arms.parquet", rows, "nightly_arms")
    return len(rows)


def comparison(nightly_id: str) -> list[dict]:
    """This night's rows of the `nightly` view (one per preset x arm), as JSON-ready records."""
    df = query("SELECT * FROM nightly WHERE nightly_id = $id ORDER BY preset, arm", params={"id": nightly_id})
    records = df.astype(object).where(df.notna(), None).to_dict("records")
    for r in records:
        for k, v in r.items():
            if isinstance(v, datetime):
                r[k] = v.isoformat()
            elif isinstance(v, float) and not math.isfinite(v):
                r[k] = None
    return records


def _pp(v: float | None, sign: bool = True) -> str:
    return "-" if v is None else (f"{v:+.1f}" if sign else f"{v:.1f}")


def table_rows(rows: list[dict]) -> list[dict]:
    """The comparison as the table artifact shows it: rounded, one row per preset x arm."""
    def r2(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return [{
        "preset": r["preset"], "arm": r["arm"], "verdict": r["verdict"],
        "delta_pp": r2(r["delta_pp"]), "ci95_pp": f"[{_pp(r['ci_low_pp'])}, {_pp(r['ci_high_pp'])}]",
        "prev_delta_pp": r2(r["prev_delta_pp"]), "change_pp": r2(r["change_pp"]), "change_ci_pp": r2(r["change_ci_pp"]),
        "run_id": r["run_id"], "prev_run_id": r["prev_run_id"],
        "code_version": (r["code_version"] or "")[:12], "prev_code_version": (r["prev_code_version"] or "")[:12],
    } for r in rows]


def to_markdown(nightly_id: str, rows: list[dict], failures: dict[str, str], presets: list[str], smoke: bool) -> str:
    """The nightly report: counts, regressions and improvements first, every arm, failed presets."""
    by = {v: [r for r in rows if r["verdict"] == v] for v in ("regression", "improvement", "within-ci", "no-baseline")}
    scale = "micro scale (--smoke)" if smoke else "full scale"
    lines = [
        f"# Nightly `{nightly_id}`", "",
        f"Presets: {', '.join(presets)} at {scale}. **{len(by['regression'])} regression(s)**, "
        f"{len(by['improvement'])} improvement(s), {len(by['within-ci'])} arm(s) within the CI, "
        f"{len(by['no-baseline'])} without an earlier night; **{len(failures)} preset(s) failed**.", "",
    ]

    def table(sel: list[dict]) -> list[str]:
        out = ["| preset | arm | verdict | Δpp tonight (95% CI) | Δpp before | change | ± CI of change | code | code before |",
               "|---|---|---|---|---|---|---|---|---|"]
        for r in sel:
            out.append(f"| {r['preset']} | {r['arm']} | {r['verdict']} | {_pp(r['delta_pp'])} "
                       f"[{_pp(r['ci_low_pp'])}, {_pp(r['ci_high_pp'])}] | {_pp(r['prev_delta_pp'])} | "
                       f"{_pp(r['change_pp'])} | {_pp(r['change_ci_pp'], sign=False)} | "
                       f"`{(r['code_version'] or '-')[:12]}` | `{(r['prev_code_version'] or '-')[:12]}` |")
        return out + [""]

    for verdict, title in (("regression", "Regressions"), ("improvement", "Improvements")):
        if by[verdict]:
            lines += [f"## {title}", "", *table(by[verdict])]
    if rows:
        lines += ["## Every arm", "", *table(rows)]
    if failures:
        lines += ["## Failed presets", ""] + [f"- **{p}**: {msg}" for p, msg in failures.items()] + [""]
    lines += [
        "Each arm is compared with the previous nightly run of the same experiment, config hash and arm. "
        "Δpp: last round minus the base model, with its 95 % paired-bootstrap interval. A change is a "
        "regression (improvement) when it is below (above) ± sqrt(h² + h_before²), h the half-widths of the "
        "two nights' intervals.", "",
        f"SQL: `pidistill sql \"select * from nightly where nightly_id = '{nightly_id}'\"`",
    ]
    return "\n".join(lines) + "\n"


@task(name="publish-nightly", cache_policy=NO_CACHE)
def publish(nightly_id: str, failures: dict[str, str], presets: list[str], smoke: bool) -> list[dict]:
    """Publish the night's comparison (from the `nightly` view) as table and markdown artifacts."""
    rows = comparison(nightly_id)
    if rows:
        create_table_artifact(table=table_rows(rows), key=TABLE_KEY,
                              description=f"{nightly_id}: each arm's Δpp vs the previous night (regressions flagged)")
    create_markdown_artifact(markdown=to_markdown(nightly_id, rows, failures, presets, smoke), key=REPORT_KEY,
                             description=f"nightly {nightly_id}")
    return rows


@flow(name="nightly")
def nightly_flow(
    presets: list[str] = list(NIGHTLY_PRESETS),  # noqa: B006 - read only; Prefect shows it as the default
    smoke: bool = False,
    overrides: list[str] = [],  # noqa: B006
    fail_on_regression: bool = True,
) -> list[dict]:
    """Rerun presets and compare each arm's Δpp vs base with the previous night's run of the same config.

    Args:
        presets: Preset names to rerun, in order (see `pidistill list`).
        smoke: Run them at micro scale (like `pidistill run --smoke`): tiny model, few problems, one seed.
            Smoke nights are compared only with smoke nights (the config hash differs).
        overrides: `key=value` config overrides for every preset, like `pidistill run --set` (value is YAML).
        fail_on_regression: End this flow run Failed when an arm regressed (after publishing the artifacts).
    """
    log = get_run_logger()
    configs = resolve_presets(presets, smoke, overrides)  # bad input fails here, before anything runs
    started = datetime.now(timezone.utc)
    nightly_id = new_nightly_id(started)
    log.info(f"{nightly_id}: {', '.join(configs)} ({'smoke' if smoke else 'full'} scale); outputs in {home_dir()}")
    failures: dict[str, str] = {}
    for name, cfg in configs.items():
        run_id = f"{nightly_id}-{name}"
        try:
            experiment_flow(cfg, run_id=run_id)
            record_arms(run_id, nightly_id, started, name, smoke)
        except Exception as exc:  # noqa: BLE001 - one preset failing must not skip the others
            failures[name] = f"{type(exc).__name__}: {exc}"[:1000]
            log.error(f"{name} ({run_id}) failed: {failures[name]}")
    rows = publish(nightly_id, failures, list(configs), smoke)
    regressions = [f"{r['preset']}/{r['arm']} {r['change_pp']:+.1f}pp (± {r['change_ci_pp']:.1f})"
                   for r in rows if r["verdict"] == "regression"]
    for r in rows:
        log.info(f"{r['preset']}/{r['arm']}: {r['verdict']} (Δpp {_pp(r['delta_pp'])}, before {_pp(r['prev_delta_pp'])})")
    problems = []
    if failures:
        problems.append(f"{len(failures)} preset(s) failed: {', '.join(failures)}")
    if regressions and fail_on_regression:
        problems.append(f"{len(regressions)} regression(s): {'; '.join(regressions)}")
    if problems:
        raise NightlyFailed(f"{nightly_id}: " + "; ".join(problems))
    return rows
