"""`pidistill serve`: a real Prefect server on loopback, prefect.yaml deployed, a worker running a deployment
triggered through the API, its attempts in SQL, and nothing left running afterwards (slow). Plus the fast
parts: clear errors, stopping a process tree, the typed form's descriptions."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from cli import processes
from cli import serve as serve_mod
from cli.main import main
from experiments.config import load_config, preset_names

REPO = Path(__file__).resolve().parent.parent


def _pidistill() -> list[str]:
    exe = Path(sys.executable).parent / "pidistill"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cli.main"]


def test_serve_fails_clearly_when_prefect_api_url_does_not_answer(monkeypatch, capsys):
    port = processes.free_port()  # nothing listens there
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert f"PREFECT_API_URL=http://127.0.0.1:{port}/api does not answer" in err


def test_serve_fails_clearly_when_the_port_is_taken(monkeypatch, capsys, pidistill_home: Path):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
    assert main(["serve", "--limit", "0"]) == 2
    assert main(["serve", "--deployments", "smoke-demo", "no-such"]) == 1
    assert "--deployments: 'no-such' not in prefect.yaml; deployments: code-retry" in capsys.readouterr().err


def test_a_port_left_in_time_wait_by_a_stopped_server_counts_as_free():
    """Restarting serve on the same port right after stopping it must work (the server binds with
    SO_REUSEADDR; a plain bind would fail while the old connections sit in TIME_WAIT)."""
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert processes.port_in_use("127.0.0.1", port)
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = srv.accept()
        conn.close()  # the server side closes first: its end of the connection goes to TIME_WAIT
        client.recv(1)
        client.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the scenario is real: a bind without SO_REUSEADDR fails
    assert not processes.port_in_use("127.0.0.1", port)


def test_stop_ends_a_process_and_its_descendants_in_other_sessions():
    code = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], "
        "start_new_session=True); print('up', flush=True); time.sleep(300)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "up"
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(family) == 2
    started = time.monotonic()
    processes.stop(proc, grace=5)
    assert processes.alive(family) == [] and time.monotonic() - started < 30


def test_experiment_flow_parameters_form_is_typed_and_described():
    from prefect.utilities.callables import parameter_schema

    from flows.experiment import experiment_flow

    schema = parameter_schema(experiment_flow).model_dump()
    assert schema["properties"]["config"]["$ref"] == "#/definitions/ExperimentConfig"
    defs = schema["definitions"]
    for name in ("ExperimentConfig", "DomainConfig", "SamplingConfig", "RetryConfig", "TrainConfig"):
        props = defs[name]["properties"]
        assert props and all(p.get("description") for p in props.values()), name


@pytest.mark.parametrize("preset", preset_names())
def test_each_preset_gets_a_form_of_its_own_sections_a_smoke_switch_and_arms_as_fields(preset: str):
    """Issue 15: no Qwen form shows the tiny recipe, OPSD or Ray; no `str | None` switches; arms are fields."""
    import jsonschema
    from prefect.utilities.callables import parameter_schema

    from flows.experiment import experiment_flow
    from flows.forms import preset_form

    config = load_config(preset)
    form = preset_form(config, parameter_schema(experiment_flow).model_dump())
    defs = form["definitions"]
    order = list(defs["ExperimentConfig"]["properties"])
    own = [k for k in config.model_dump(exclude_defaults=True) if k not in ("name", "description", "seed_result")]
    assert order[:3] == ["name", "description", "seed_result"] and set(order[3 : 3 + len(own)]) == set(own)
    assert form["properties"]["smoke"]["type"] == "boolean"  # the run's smoke switch: the flow's parameter
    assert sorted(form["properties"], key=lambda k: form["properties"][k]["position"]) == ["smoke", "run_id", "config"]
    arms = [config.for_arm(a.name) for a in config.arms]
    assert ("tiny" in defs["ModelConfig"]["properties"]) == any(a.model.name_or_path == "tiny" for a in arms)
    assert ("opsd" in defs["TrainConfig"]["properties"]) == any(a.train.method == "opsd" for a in arms)
    assert "scale" not in order
    assert '{"type": "null"}' not in json.dumps(form)
    fields = defs["ArmConfig"]["properties"]["set"]["properties"]
    assert set(fields) == {k for a in config.arms for k in a.set}
    assert all(f.get("type") or f.get("enum") for f in fields.values()), fields
    # what the deployment submits by default fits its form, and so does a smoke run
    jsonschema.validate({"config": config.model_dump(mode="json", exclude_defaults=True)}, form)
    jsonschema.validate({"config": config.model_dump(mode="json", exclude_defaults=True), "smoke": True}, form)


class _Served:
    """`pidistill serve` as a subprocess, its output collected by a thread (and kept in a file)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.lines: list[str] = []
        self.log = log
        self.proc = subprocess.Popen(
            _pidistill() + ["serve", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.log, "w") as f:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                f.write(line)
                f.flush()

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = next((ln for ln in self.lines if ln.startswith(prefix)), None)
            if hit:
                return hit
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        pytest.fail(f"serve never printed {prefix!r} (status {self.proc.poll()}):\n{self.tail()}")

    def family(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


@pytest.mark.slow
def test_serve_deploys_and_its_worker_runs_a_deployment_triggered_through_the_api(
    tiny_model: Path, pidistill_home: Path, tmp_path: Path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from experiments.config import load_config
    from flows.deployments import SMOKE_PRESETS, deployments
    from storage.catalog import query

    port = processes.free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PIDISTILL_HOME=str(pidistill_home), PREFECT_HOME=str(tmp_path / "prefect"))
    assert env["PIDISTILL_MODEL_CACHE"]  # conftest: the session's tiny model, not a rebuild
    served = _Served(["--port", str(port)], env, tmp_path / "serve.log")
    seen: set[int] = set()
    family: list[psutil.Process] = []
    try:
        t0 = time.monotonic()
        assert served.wait_for("UI: ", timeout=420).startswith(f"UI: http://127.0.0.1:{port}")
        served.wait_for("worker on pool 'pidistill'", timeout=30)
        ready_s = time.monotonic() - t0
        import json
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10) as r:
            assert json.load(r)["api_url"] == api  # the browser's UI talks to this server, not :4200
        with temporary_settings(updates={PREFECT_API_URL: api}):
            with get_client(sync_client=True) as client:
                dep = client.read_deployment_by_name("experiment/smoke-demo")
                qwen = client.read_deployment_by_name("experiment/star-try-again")
                nightly = client.read_deployment_by_name("nightly/nightly")
            on_server = serve_mod.deployments_on_server(api)
            t1 = time.monotonic()
            run = run_deployment(
                "experiment/smoke-demo",
                parameters={"run_id": "ui-smoke"},
                timeout=900,
                poll_interval=2,
                as_subflow=False,
            )
            run_s = time.monotonic() - t1
            assert run.state is not None and run.state.is_completed(), f"{run.state}\n{served.tail()}"
            # The nightly deployment through the same worker, its form edited down to a few seconds of work.
            t2 = time.monotonic()
            night = run_deployment(
                "nightly/nightly",
                timeout=900,
                poll_interval=2,
                as_subflow=False,
                parameters={
                    "presets": ["demo"],
                    "smoke": True,
                    "fail_on_regression": False,
                    "overrides": ["rounds=1", "domain.train_size=8", "domain.eval_size=16", "arms=[{name: rft}]"],
                },
            )
            night_s = time.monotonic() - t2
            assert night.state is not None and night.state.is_completed(), f"{night.state}\n{served.tail()}"
            with get_client(sync_client=True) as client:
                artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[night.id])))
        family = served.family()  # the server, the worker and whatever they started, while all are up
        seen = {p.pid for p in family}
    finally:
        family = family or served.family()
        if served.proc.poll() is None:
            served.proc.send_signal(signal.SIGTERM)
        try:
            status = served.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            status = None
        leftovers = processes.alive(family)
        for p in leftovers:  # never leave a server or worker behind, even when the test fails
            p.kill()
    assert status == 0, served.tail()
    assert leftovers == [], f"still running after serve stopped: {[p.pid for p in leftovers]}"
    assert len(seen) >= 3  # serve, the server, the worker (and its flow-run processes when caught)
    assert "stopping ..." in served.lines

    # Every deployment of prefect.yaml is on the server, with a typed, described form.
    assert set(on_server) == {
        {"nightly": "nightly/", "sweep": "sweep/"}.get(d["name"].split("-")[0], "experiment/") + d["name"]
        for d in deployments()
    }
    props = dep.parameter_openapi_schema["definitions"]["ExperimentConfig"]["properties"]
    assert all(p.get("description") for p in props.values())
    # serve cut each preset's form to the preset (flows/forms.py): a Qwen preset shows no tiny recipe
    qwen_defs = qwen.parameter_openapi_schema["definitions"]
    assert (
        "tiny" not in qwen_defs["ModelConfig"]["properties"]
        and "tiny" in dep.parameter_openapi_schema["definitions"]["ModelConfig"]["properties"]
    )
    assert "smoke" in qwen.parameter_openapi_schema["properties"]  # the run's smoke switch
    assert "retry.feedback" in qwen_defs["ArmConfig"]["properties"]["set"]["properties"]
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in nightly.schedules] == [("0 2 * * *", "UTC", True)]
    # The run landed in this PIDISTILL_HOME, with the same config as `pidistill run demo --smoke --set ...`.
    runs = query("select experiment, config_hash, status from runs where run_id = 'ui-smoke'")
    cli_config = load_config("demo", SMOKE_PRESETS["demo"], smoke_scale=True)
    assert runs.values.tolist() == [["demo", cli_config.config_hash(), "completed"]]
    arms = query("""select arm, count(*) n from attempts where run_id = 'ui-smoke' and phase = 'train'
                    group by arm order by arm""")
    assert arms.arm.tolist() == ["double-sample", "no-retry", "retry"] and (arms.n > 0).all()
    assert not (pidistill_home / "models").exists()  # the worker's runs used PIDISTILL_MODEL_CACHE's model
    # The nightly's run is marked by its run_id, its comparison is in SQL and on its flow run's page.
    nightly_rows = query("select nightly_id, preset, arm, verdict, run_id from nightly")
    assert nightly_rows[["preset", "arm", "verdict"]].values.tolist() == [["demo", "rft", "no-baseline"]]
    assert nightly_rows.run_id[0] == f"{nightly_rows.nightly_id[0]}-demo" and nightly_rows.run_id[0].startswith(
        "nightly-"
    )
    assert {a.key for a in artifacts} == {"nightly-comparison", "nightly-report"}
    print(f"\nserve ready in {ready_s:.0f} s; through the worker: smoke-demo {run_s:.0f} s, nightly {night_s:.0f} s")
