"""The nightly regression check: rerun presets, compare each arm with the previous night's run.

    nightly_flow(presets=["demo"], smoke=False)     # what the `nightly` deployment runs at 02:00 UTC

Each preset runs as an ordinary experiment (a subflow) named `<nightly_id>-<preset>`; its arms' Δpp vs base
go to the `nightly_arms` table, and the catalog's `nightly` view compares them with the previous night.
The steps are in tasks/nightly.py (run ids, artifacts), the numbers and markdown in analysis/nightly.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger

from flows.deployments import NIGHTLY_PRESETS
from flows.experiment import experiment_flow
from storage.home import home_dir
from tasks.nightly import judge, new_nightly_id, publish, record_arms, resolve_presets


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
    started = datetime.now(UTC)
    nightly_id = new_nightly_id(started)
    log.info(f"{nightly_id}: {', '.join(configs)} ({'smoke' if smoke else 'full'} scale); outputs in {home_dir()}")
    failures: dict[str, str] = {}
    for name, cfg in configs.items():
        run_id = f"{nightly_id}-{name}"
        try:
            experiment_flow(cfg, run_id=run_id)
            record_arms(run_id, nightly_id, started, name, smoke)
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"[:1000]
            log.error(f"{name} ({run_id}) failed: {failures[name]}")
    rows = publish(nightly_id, failures, list(configs), smoke)
    judge(nightly_id, rows, failures, fail_on_regression)
    return rows
