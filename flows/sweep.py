"""A design sweep (experiments/sweep.py): each setting's experiment as a subflow, then the table. Wiring only."""

from __future__ import annotations

from prefect import flow, get_run_logger

from analysis.sweep import SweepRow, sweep_row, to_markdown
from analysis.tables import interval_pp, signed_pp
from experiments.sweep import check_only, describe, load_sweep, setting_config, setting_run_id
from flows.experiment import experiment_flow
from storage.catalog import query
from storage.home import home_dir


@flow(name="sweep", flow_run_name="sweep {name}")
def sweep_flow(name: str, only: list[str] | None = None) -> str:
    """Run the settings of sweep `name` not run yet (a completed setting is reused, a failed or killed one
    resumed), then write `<PIDISTILL_HOME>/sweeps/<name>.md` with one row per setting; returns that table.

    Args:
        name: A sweep of experiments/sweeps/ (or a path to a sweep YAML).
        only: Setting names to run (default: all); the table still shows every setting already run.
    """
    spec = load_sweep(name)
    check_only(spec, only)
    planned = [(s, setting_config(spec, s)) for s in spec.settings]  # every setting checked before any runs
    rows: list[SweepRow] = []
    for setting, config in planned:
        run_id = setting_run_id(spec, setting, config)
        if (only is None or setting.name in only) and _status(run_id) != "completed":
            experiment_flow(config, run_id=run_id)
        if _status(run_id) == "completed":
            rows.append(sweep_row(setting.name, describe(setting), run_id, spec.reference, spec.compared))
            r = rows[-1]
            get_run_logger().info(
                f"setting {r.setting}: {spec.compared} - {spec.reference} {signed_pp(r.difference)} "
                f"{interval_pp(r.low, r.high)} pp, {r.reading()} ({r.minutes:.1f} min)"
            )
    table = to_markdown(rows, spec.reference, spec.compared)
    out = home_dir() / "sweeps" / f"{spec.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(f"# Sweep {spec.name}: {spec.compared} vs {spec.reference}, seeds {spec.seeds}\n\n{table}")
    tmp.replace(out)  # never a half-written table
    return table


def _status(run_id: str) -> str | None:
    rows = query("SELECT status FROM runs WHERE run_id = $run_id", None, {"run_id": run_id})
    return None if rows.empty else str(rows.status.iloc[0])
