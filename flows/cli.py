"""The `pidistill` command.

    pidistill demo                                   # the micro-scale headline experiment on CPU
    pidistill run PRESET_OR_YAML [--run-id ID] [--set key=value ...] [--smoke]
                                                     # an existing --run-id resumes that run
    pidistill smoke [PRESET ...]                     # presets at micro scale (all by default)
    pidistill list                                   # presets and what the original sprint measured
    pidistill sql "select arm, avg(passed::int) from attempts group by arm"
    pidistill report [RUN_ID ...]                    # report.md + report.html (default: the latest run)
    pidistill bootstrap-model                        # build the tiny local model now
    pidistill doctor                                 # what this machine can run (Lean, GPU, sandbox)
    pidistill serve [--port N]                       # Prefect server + deployments + worker; prints the UI URL

Exit codes: 0 ok, 1 the run failed, 2 bad input (config, query, arguments).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from experiments.config import ConfigError, ExperimentConfig, load_config, preset_names


def _prefect_defaults() -> None:
    # Offline by default: no telemetry; an ephemeral API unless PREFECT_API_URL points at a server.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The ephemeral server's start can take over 20 s (Prefect's default limit) on a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.environ.get("PREFECT_API_URL"):
        _reap_orphaned_prefect_servers()
        # Inherited by the ephemeral server Prefect starts for this process: lets a later
        # pidistill find it if this process is killed before it can stop it.
        os.environ["PIDISTILL_SERVER_OWNER"] = str(os.getpid())


def _reap_orphaned_prefect_servers() -> list[int]:
    """Stop ephemeral Prefect servers whose pidistill process died without stopping them (SIGKILL,
    OOM): Prefect starts them as plain child processes, so they outlive a killed parent."""
    import signal

    reaped = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:  # gone, or not ours to read
            continue
        owner = env.get(b"PIDISTILL_SERVER_OWNER")
        if not owner or env.get(b"PREFECT__SERVER_EPHEMERAL") != b"1" or not owner.isdigit():
            continue
        if os.path.exists(f"/proc/{int(owner)}") and int(owner) != int(entry):
            continue  # its pidistill is alive
        try:
            os.kill(int(entry), signal.SIGTERM)
            reaped.append(int(entry))
        except OSError:
            pass
    return reaped


def _run(config: ExperimentConfig, run_id: str | None) -> int:
    from analysis.report import build_report, format_table
    from flows.experiment import experiment_flow
    from storage.writer import home_dir
    from tasks.runs import check_resumable, new_run_id, preflight

    preflight(config)  # before anything is written
    run_id = run_id or new_run_id(config.name)
    previous = check_resumable(config, run_id)  # an existing run id resumes that run (same config only)
    started = time.time()
    what = f"resuming run {run_id} (was {previous['status']})" if previous else f"run {run_id}"
    print(f"{what}: {config.name}, {len(config.arms)} arms x {len(config.seeds)} seeds x {config.rounds} rounds "
          f"on {config.domain.name}; outputs in {home_dir() / run_id}", flush=True)
    experiment_flow(config, run_id=run_id)
    print(f"\n{config.name} ({run_id}) finished in {time.time() - started:.0f} s\n")
    print(format_table(build_report(run_id)))
    print(f"\nReport: {home_dir() / run_id / 'report' / 'report.html'}")
    print(f'\nQuery every attempt:  pidistill sql "select arm, seed, round, count(*), avg(passed::int) '
          f"from attempts where run_id = '{run_id}' group by all order by all\"")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return _run(load_config(args.config, args.set, smoke_scale=args.smoke), args.run_id)


def cmd_demo(args: argparse.Namespace) -> int:
    return _run(load_config("demo", args.set), args.run_id)


def _needs_missing_piece(cfg: ExperimentConfig) -> str | None:
    """Why a preset cannot run at all yet here (Lean presets without Lean, OPSD before its trainer)."""
    from tasks.runs import PreflightError, preflight

    try:
        preflight(cfg)
    except PreflightError as exc:
        arms = [cfg.for_arm(a.name) for a in cfg.arms]
        if any(a.domain.name == "minif2f" for a in arms) or any(a.train.method == "opsd" for a in arms):
            return str(exc)
        raise
    return None


def cmd_smoke(args: argparse.Namespace) -> int:
    """Run presets at micro scale; Lean/OPSD presets that cannot run here are skipped with the reason."""
    names = args.presets or preset_names()
    results = []
    for name in names:
        cfg = load_config(name, args.set, smoke_scale=True)
        started = time.time()
        try:
            skip = _needs_missing_piece(cfg)
            status = f"skipped: {skip}" if skip else ("ok" if _run(cfg, None) == 0 else "FAILED")
        except ConfigError as exc:
            status = f"FAILED: {exc}"
        except Exception as exc:  # noqa: BLE001 - report every preset, then fail
            status = f"FAILED: {type(exc).__name__}: {exc}"
        results.append((name, status, time.time() - started))
    print("\nsmoke results")
    for name, status, seconds in results:
        print(f"  {name:<28} {seconds:6.0f} s  {status[:160]}")
    return 1 if any(s.startswith("FAILED") for _, s, _ in results) else 0


def cmd_list(args: argparse.Namespace) -> int:
    for name in preset_names():
        cfg = load_config(name)
        desc = " ".join(cfg.description.split())
        print(f"{name:<28} {cfg.domain.name:<9} {len(cfg.arms)} arms  seed result: {cfg.seed_result or '-'}")
        if args.verbose and desc:
            print(f"    {desc}")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb
    import pandas as pd

    from storage.catalog import query

    try:
        df = query(args.query)
    except duckdb.Error as exc:
        print(f"pidistill sql: {exc}", file=sys.stderr)
        return 2
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.max_rows", args.max_rows, "display.max_columns", None, "display.width", 200,
                               "display.max_colwidth", 60):
            print(df.to_string(index=False) if len(df) else f"(no rows; columns: {', '.join(df.columns)})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """(Re)write the report of the given runs (default: the latest) and print their tables."""
    from analysis.report import build_report, format_table, write_report
    from storage.catalog import query

    run_ids = args.run_ids or query("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").run_id.tolist()
    if not run_ids:
        print("pidistill report: no runs yet", file=sys.stderr)
        return 2
    for run_id in run_ids:
        try:
            report = build_report(run_id)
        except KeyError as exc:
            print(f"pidistill report: {exc.args[0]}", file=sys.stderr)
            return 2
        path = write_report(report)
        print(format_table(report))
        print(f"report: {path}\n")
        if args.screenshot:
            from analysis.screenshot import screenshot

            print(f"screenshot: {screenshot(path, Path(args.screenshot))}")
            args.screenshot = None  # of the first run only
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from models.tiny import ensure_tiny_model

    cfg = load_config(args.config, args.set)
    print(ensure_tiny_model(cfg.model.tiny))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """What this machine can run: accelerator, code sandbox isolation, Lean (and so which presets)."""
    import torch

    from lean_env.doctor import doctor, format_doctor
    from sandbox import Limits, Sandbox

    print(f"python   {sys.version.split()[0]}, torch {torch.__version__}, "
          f"cuda {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    with Sandbox(Limits(timeout_s=5.0), workers=1) as sb:
        r = sb.run("print('ok')")
    print(f"sandbox  isolation={r.isolation} status={r.status}")
    rows = doctor(live=args.live)
    print(format_doctor(rows))
    lean_ok = all(ok for _, ok, _ in rows)
    lean_presets = [n for n in preset_names() if load_config(n).domain.name == "minif2f"]
    if lean_presets:
        state = "can run" if lean_ok else "cannot run (Lean not found)"
        print(f"Lean presets {state}: {', '.join(lean_presets)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The UI path: a Prefect server (PREFECT_API_URL's, or one started here), the work pool, every
    deployment of prefect.yaml, and a worker in the foreground until Ctrl-C (see flows/serve.py)."""
    from flows.serve import ServeError, serve

    if args.limit < 1:
        print("pidistill serve: --limit must be at least 1", file=sys.stderr)
        return 2
    if args.port is not None and not 0 <= args.port <= 65535:
        print(f"pidistill serve: --port {args.port} is not a port (0-65535; 0 = any free one)", file=sys.stderr)
        return 2
    try:
        return serve(host=args.host, port=args.port if args.port is not None else 4200, worker=not args.no_worker,
                     deploy_names=args.deployments or None, skip_deploy=args.no_deploy, limit=args.limit)
    except ServeError as exc:
        print(f"pidistill serve: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pidistill", description="LLM self-improvement loops, every attempt queryable.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.lr=1e-4 (repeatable; value is YAML)")
        sp.add_argument("--run-id", default=None, help="run id (default: <preset>-<utc time>-<rand>); the id of an existing run "
                             "resumes it: completed stages are skipped")

    sp = sub.add_parser("run", help="run a preset or YAML config")
    sp.add_argument("config", help="preset name (see `pidistill list`) or path to a YAML file")
    sp.add_argument("--smoke", action="store_true",
                    help="micro scale on CPU: tiny model, gsm8k -> arith, few problems, one seed")
    with_config(sp)
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("smoke", help="run presets with --smoke (default: all); skips what needs Lean/OPSD")
    sp.add_argument("presets", nargs="*", help="preset names (default: every preset)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sp.set_defaults(fn=cmd_smoke)

    sp = sub.add_parser("demo", help="the demo experiment (arith, tiny model, CPU)")
    with_config(sp)
    sp.set_defaults(fn=cmd_demo)

    sp = sub.add_parser("list", help="list presets")
    sp.add_argument("-v", "--verbose", action="store_true", help="also print descriptions")
    sp.set_defaults(fn=cmd_list)

    sp = sub.add_parser("sql", help="run SQL over all runs (tables: runs, attempts, sft_examples, trainings, evaluations)")
    sp.add_argument("query")
    sp.add_argument("--format", choices=["table", "csv"], default="table")
    sp.add_argument("--max-rows", type=int, default=200)
    sp.set_defaults(fn=cmd_sql)

    sp = sub.add_parser("report", help="write report.md / report.html of runs (default: the latest)")
    sp.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    sp.add_argument("--screenshot", metavar="PNG", help="also render report.html in headless Chromium to PNG")
    sp.set_defaults(fn=cmd_report)

    sp = sub.add_parser("bootstrap-model", help="build (or find cached) the tiny local model")
    sp.add_argument("config", nargs="?", default="demo", help="preset or YAML whose model.tiny recipe to build")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sp.set_defaults(fn=cmd_bootstrap)

    sp = sub.add_parser("serve", help="Prefect UI: start (or use PREFECT_API_URL's) server, deploy prefect.yaml, run a worker")
    sp.add_argument("--host", default="127.0.0.1", help="address of the server started here (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=None, help="port of the server started here (default 4200; 0 = any free)")
    sp.add_argument("--no-worker", action="store_true", help="do not run a worker (runs wait for one started elsewhere)")
    sp.add_argument("--no-deploy", action="store_true", help="keep the deployments as they are on the server")
    sp.add_argument("--deployments", nargs="+", metavar="NAME", help="deploy only these (default: all of prefect.yaml)")
    sp.add_argument("--limit", type=int, default=1, help="most flow runs the worker runs at once (default 1)")
    sp.set_defaults(fn=cmd_serve)

    sp = sub.add_parser("doctor", help="report what this machine can run (GPU, sandbox, Lean)")
    sp.add_argument("--live", action="store_true", help="also start a Lean REPL and check a one-line theorem")
    sp.set_defaults(fn=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    _prefect_defaults()
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"pidistill: config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
