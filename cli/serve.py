"""`pidistill serve`: the Prefect UI path. A server, the `pidistill` work pool, every deployment of
prefect.yaml, and a worker that runs what the UI starts.

    pidistill serve                       # server on 127.0.0.1:4200 (or PREFECT_API_URL's), deploy, worker
    pidistill serve --port 0              # any free port
    pidistill serve --no-worker           # serve the UI and deployments; run workers elsewhere
    pidistill serve --deployments smoke-demo nightly

Steps (each a function here, so tests and scripts can use them on their own):

1. PREFECT_API_URL set: that server must answer `/health`. Otherwise `prefect server start --host
   127.0.0.1 --port N` runs as a child (log under $PIDISTILL_HOME/_serve/) until it answers.
2. The `pidistill` work pool (type process) is created when missing.
3. `prefect deploy --all` (or `-n NAME` each) runs in this checkout with PIDISTILL_REPO set to it, so the
   deployments' pull step records where flow runs start.
4. `prefect worker start --pool pidistill --limit 1` runs in the foreground; its flow runs inherit this
   environment, PIDISTILL_HOME (made absolute) and PIDISTILL_MODEL_CACHE included, so `pidistill sql` from
   here sees what the UI's runs wrote.

Ctrl-C or SIGTERM stops what serve started: the worker's flow runs, the worker, then the server (SIGTERM
to descendants first, then the process, SIGKILL to what is left after a grace period). Children run in
their own sessions, so the terminal's Ctrl-C reaches only serve, which stops them in that order. A run
still in progress is interrupted and reports itself Crashed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cli.env import offline_defaults
from cli.processes import free_port, port_in_use, stop
from flows.deployments import EXPERIMENT_ENTRYPOINT, PREFECT_YAML, REPO_ROOT, WORK_POOL
from storage.home import home_dir

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
STARTUP_TIMEOUT_S = 180.0  # a cold server on a busy 2-core machine migrates its database first


class ServeError(RuntimeError):
    """serve cannot go on: a server that does not answer, a port in use, a deploy that failed."""


def prefect_cmd(*args: str) -> list[str]:
    """The `prefect` CLI of this interpreter (the venv's), not whichever is first on PATH."""
    return [sys.executable, "-m", "prefect", *args]


def ui_url(api_url: str) -> str:
    """The UI's address for an API address: PREFECT_UI_URL when set, else the API URL without `/api`."""
    return os.environ.get("PREFECT_UI_URL") or api_url.rstrip("/").removesuffix("/api")


def healthy(api_url: str, timeout: float = 3.0) -> bool:
    """Does the Prefect API at `api_url` answer GET /health with 200?"""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_healthy(
    api_url: str, timeout: float = STARTUP_TIMEOUT_S, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    """Wait until the API answers; raises ServeError if `proc` (the server) exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(api_url):
            return
        if proc is not None and proc.poll() is not None:
            raise ServeError(
                f"the Prefect server exited with status {proc.returncode} before answering at "
                f"{api_url}" + (f"; its log ({log}):\n{_tail(log)}" if log else "")
            )
        time.sleep(0.5)
    raise ServeError(
        f"no Prefect server answered at {api_url}/health within {timeout:.0f} s"
        + (f"; its log ({log}):\n{_tail(log)}" if log else "")
    )


def child_env(api_url: str | None) -> dict[str, str]:
    """The environment of serve's children: this one, plus where the API, the outputs and the repo are."""
    env = dict(os.environ)
    offline_defaults(env)
    env["PIDISTILL_HOME"] = str(home_dir())  # absolute: flow runs start in the repo, not in this folder
    env["PIDISTILL_REPO"] = str(REPO_ROOT)
    if "PIDISTILL_MODEL_CACHE" in env:
        env["PIDISTILL_MODEL_CACHE"] = str(Path(env["PIDISTILL_MODEL_CACHE"]).resolve())
    if api_url:
        env["PREFECT_API_URL"] = api_url
    else:
        env.pop("PREFECT_API_URL", None)
    return env


def start_server(host: str, port: int, log: Path) -> subprocess.Popen:
    """`prefect server start` as a child in its own session, output to `log`; returns at once."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = child_env(None)
    # The UI in the browser asks /ui-settings where the API is; that answer comes from these settings, not
    # from --host/--port, so without them a server on another port than 4200 serves a UI talking to :4200.
    # (A PREFECT_UI_API_URL of your own, e.g. for --host 0.0.0.0 behind another name, is kept.)
    env.update(PREFECT_SERVER_API_HOST=host, PREFECT_SERVER_API_PORT=str(port))
    env.setdefault("PREFECT_UI_API_URL", f"http://{host}:{port}/api")
    with open(log, "ab") as out:
        return subprocess.Popen(
            prefect_cmd("server", "start", "--host", host, "--port", str(port)),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def ensure_work_pool(api_url: str, name: str = WORK_POOL) -> bool:
    """Create the process work pool `name` unless it exists; returns whether it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            try:
                pool = client.read_work_pool(name)
            except ObjectNotFound:
                client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type="process",
                        description="pidistill experiments (pidistill serve)",
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                    )
                )
                return True
    if pool.type != "process":
        raise ServeError(
            f"work pool {name!r} exists with type {pool.type!r}; pidistill's deployments need a "
            "'process' pool (delete it in the UI, or point PREFECT_API_URL at another server)"
        )
    return False


def yaml_deployment_names() -> list[str]:
    """The deployment names prefect.yaml defines (what `--deployments` may name)."""
    import yaml

    return [d["name"] for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]]


def deploy(api_url: str, names: list[str] | None = None, timeout: float = 900.0) -> str:
    """`prefect deploy --all` (or `-n NAME` for each name) from prefect.yaml; returns the CLI's output."""
    args = ["--no-prompt", "deploy", "--prefect-file", str(PREFECT_YAML)]
    args += [a for n in names for a in ("--name", n)] if names else ["--all"]
    try:
        done = subprocess.run(
            prefect_cmd(*args),
            cwd=REPO_ROOT,
            env=child_env(api_url),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ServeError(f"prefect deploy did not finish within {timeout:.0f} s") from None
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise ServeError(f"prefect deploy failed (status {done.returncode}):\n" + "\n".join(out.splitlines()[-40:]))
    return out


def tailor_forms(api_url: str) -> int:
    """Give each experiment deployment on the server its preset's run form (flows/forms.py); returns how many.
    `prefect deploy` sets every deployment's form from experiment_flow's signature: all ~100 fields."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.filters import DeploymentFilter, WorkPoolFilter, WorkPoolFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.callables import parameter_schema

    from flows.deployments import experiment_configs
    from flows.experiment import experiment_flow
    from flows.forms import preset_form

    flow_schema = parameter_schema(experiment_flow).model_dump()
    configs = experiment_configs()
    done = 0
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        deps = client.read_deployments(
            deployment_filter=DeploymentFilter(),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[WORK_POOL])),
        )
        for d in deps:
            if d.name in configs and d.entrypoint == EXPERIMENT_ENTRYPOINT:
                form = preset_form(configs[d.name], flow_schema)
                client.update_deployment(d.id, DeploymentUpdate(parameter_openapi_schema=form))
                done += 1
    return done


def _describe(schedule) -> str:
    cron = getattr(schedule, "cron", None)
    return f"{cron} {getattr(schedule, 'timezone', None) or 'UTC'}" if cron else str(schedule)


def deployments_on_server(api_url: str) -> dict[str, dict]:
    """The server's deployments of the pidistill pool: `flow/deployment` -> {schedules, paused, ...}."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, WorkPoolFilter, WorkPoolFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            flows = {f.id: f.name for f in client.read_flows()}
            deps = client.read_deployments(
                deployment_filter=DeploymentFilter(),
                work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[WORK_POOL])),
            )
    return {
        f"{flows.get(d.flow_id, '?')}/{d.name}": {
            "schedules": [_describe(s.schedule) for s in d.schedules if s.active],
            "paused": d.paused,
        }
        for d in deps
    }


def start_worker(api_url: str, pool: str = WORK_POOL, limit: int = 1) -> subprocess.Popen:
    """`prefect worker start --pool POOL` as a child in its own session; its output goes to ours."""
    return subprocess.Popen(
        prefect_cmd(
            "worker", "start", "--pool", pool, "--type", "process", "--limit", str(limit), "--install-policy", "never"
        ),
        cwd=REPO_ROOT,
        env=child_env(api_url),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


class _Stop(Exception):
    """SIGTERM, turned into an exception so serve's `finally` stops its children."""


class _Children:
    """What serve started (the server, the worker), stopped in reverse order on exit, even on a second
    Ctrl-C or SIGTERM (the clean-up must not be cut short)."""

    def __init__(self) -> None:
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    def __enter__(self) -> _Children:
        self._in_main = threading.current_thread() is threading.main_thread()
        if self._in_main:

            def on_term(signum, frame):
                raise _Stop()

            self._previous = signal.signal(signal.SIGTERM, on_term)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._in_main:
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stop(self.worker)
            stop(self.server)
        finally:
            if self._in_main:
                signal.signal(signal.SIGINT, interrupt)
                signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    worker: bool = True,
    deploy_names: list[str] | None = None,
    skip_deploy: bool = False,
    limit: int = 1,
    echo: Callable[[str], None] | None = None,
) -> int:
    """Run the whole UI path (see the module docstring) until Ctrl-C / SIGTERM; returns the exit status."""
    echo = echo or (lambda msg: print(msg, flush=True))
    with _Children() as children:
        try:
            _check_names(deploy_names)
            api_url = _server(host, port, children, echo)
            created = ensure_work_pool(api_url)
            echo(f"work pool {WORK_POOL!r} (process): {'created' if created else 'exists'}")
            if not skip_deploy:
                started = time.monotonic()
                deploy(api_url, deploy_names)
                forms = tailor_forms(api_url)
                echo(
                    f"deployed {', '.join(deploy_names) if deploy_names else 'every deployment'} of "
                    f"{PREFECT_YAML.name} in {time.monotonic() - started:.0f} s ({forms} run forms cut to their preset)"
                )
            _describe_deployments(api_url, echo)
            return _wait(api_url, worker, limit, children, echo)
        except (KeyboardInterrupt, _Stop):
            echo("stopping ...")
            return 0


def _check_names(deploy_names: list[str] | None) -> None:
    unknown = sorted(set(deploy_names or ()) - set(yaml_deployment_names()))
    if unknown:
        raise ServeError(
            f"--deployments: {', '.join(map(repr, unknown))} not in {PREFECT_YAML.name}; "
            f"deployments: {', '.join(yaml_deployment_names())}"
        )


def _server(host: str, port: int, children: _Children, echo: Callable[[str], None]) -> str:
    """PREFECT_API_URL's server if it answers, else one started here on host:port; returns its API URL."""
    api_url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if api_url:
        if not healthy(api_url):
            raise ServeError(
                f"PREFECT_API_URL={api_url} does not answer (GET {api_url}/health); start that "
                "server, or unset PREFECT_API_URL to have pidistill serve start one"
            )
        echo(f"Prefect server: {api_url} (PREFECT_API_URL)")
        return api_url
    port = port or free_port(host)
    api_url = f"http://{host}:{port}/api"
    if port_in_use(host, port):
        hint = (
            f"a Prefect server answers there: use it with PREFECT_API_URL={api_url}"
            if healthy(api_url)
            else "something else listens there"
        )
        raise ServeError(f"port {port} on {host} is in use ({hint}); or choose another with --port (0 = any)")
    log = home_dir() / "_serve" / f"server-{port}.log"
    echo(f"starting a Prefect server on {host}:{port} (log: {log}) ...")
    started = time.monotonic()
    children.server = start_server(host, port, log)
    wait_healthy(api_url, proc=children.server, log=log)
    echo(f"Prefect server: {api_url} (up in {time.monotonic() - started:.0f} s)")
    return api_url


def _describe_deployments(api_url: str, echo: Callable[[str], None]) -> None:
    on_server = deployments_on_server(api_url)
    scheduled = [
        f"{name} ({', '.join(d['schedules'])})"
        for name, d in sorted(on_server.items())
        if d["schedules"] and not d["paused"]
    ]
    echo(
        f"{len(on_server)} deployment(s) on pool {WORK_POOL!r}"
        + (f"; scheduled: {'; '.join(scheduled)}" if scheduled else "")
    )
    echo(f"outputs: PIDISTILL_HOME={home_dir()}")
    echo(f"UI: {ui_url(api_url)}  (Deployments -> pick one -> Run -> Custom run to edit the config form)")


def _wait(api_url: str, worker: bool, limit: int, children: _Children, echo: Callable[[str], None]) -> int:
    """Run the worker (or, with no worker, hold the server) in the foreground until it exits."""
    if worker:
        children.worker = start_worker(api_url, limit=limit)
        echo(
            f"worker on pool {WORK_POOL!r} (at most {limit} run(s) at a time); Ctrl-C stops it"
            + (" and the server" if children.server else "")
        )
        status = children.worker.wait()
        echo(f"the worker exited on its own (status {status})")
        return 1 if status else 0
    if children.server is None:
        return 0  # deployed to a server that outlives us; workers run elsewhere
    echo("no worker (--no-worker); Ctrl-C stops the server")
    status = children.server.wait()
    echo(f"the server exited on its own (status {status})")
    return 1 if status else 0
