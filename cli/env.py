"""The process environment every pidistill entry point starts from, set in one place.

    >>> offline_defaults()              # before anything imports prefect: settings come from the environment
    >>> os.environ["DO_NOT_TRACK"]
    '1'

Used by the `pidistill` command, `pidistill serve`'s children, the test suite's conftest and the
benchmarks. Only defaults: a variable the user set is kept.
"""

from __future__ import annotations

import os
import signal

DEFAULTS = {
    # Offline by default: no telemetry.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow reads DO_NOT_TRACK only as "true", not "1"
    # The ephemeral server's start can take over 20 s (Prefect's default limit) on a loaded 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Tokenizers' own thread pool fights torch's for the same cores, and warns after a fork.
    "TOKENIZERS_PARALLELISM": "false",
}


def offline_defaults(env: dict[str, str] | os._Environ[str] | None = None) -> None:
    """Fill `env` (default: this process's) with pidistill's defaults, keeping what is already set; with them
    torch's CPU numerics pinned to one instruction set (`models.numerics`: the same floats on any x86-64
    machine), which must happen before this process imports torch."""
    from models.numerics import reproducible_cpu_env

    target = os.environ if env is None else env
    for name, value in {**DEFAULTS, **reproducible_cpu_env()}.items():
        target.setdefault(name, value)


def own_ephemeral_server() -> None:
    """Before Prefect starts a temporary server for this process (no PREFECT_API_URL): stop the servers
    of pidistill processes that died, and mark the one about to start as ours.

    Prefect starts ephemeral servers as plain children, so a SIGKILLed parent leaves its server
    running; the marker (inherited by the server) lets a later pidistill find it."""
    if os.environ.get("PREFECT_API_URL"):
        return
    reap_orphaned_prefect_servers()
    os.environ["PIDISTILL_SERVER_OWNER"] = str(os.getpid())


def reap_orphaned_prefect_servers() -> list[int]:
    """SIGTERM the ephemeral Prefect servers whose owning pidistill process is gone; returns their pids."""
    reaped = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        owner = _orphan_owner(int(entry))
        if owner is None or (os.path.exists(f"/proc/{owner}") and owner != int(entry)):
            continue  # not a marked ephemeral server, or its pidistill is alive
        try:
            os.kill(int(entry), signal.SIGTERM)
            reaped.append(int(entry))
        except OSError:
            pass
    return reaped


def _orphan_owner(pid: int) -> int | None:
    """The PIDISTILL_SERVER_OWNER of process `pid` if it is an ephemeral Prefect server, else None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError:  # gone, or not ours to read
        return None
    owner = env.get(b"PIDISTILL_SERVER_OWNER")
    if not owner or env.get(b"PREFECT__SERVER_EPHEMERAL") != b"1" or not owner.isdigit():
        return None
    return int(owner)
