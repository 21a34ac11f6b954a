"""Child processes of `pidistill serve`: free ports, and stopping a process tree in order.

>>> stop(server)      # SIGTERM its descendants, then it; SIGKILL what is left after a grace period
"""

from __future__ import annotations

import socket
import subprocess
import time

STOP_GRACE_S = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """Is something listening on host:port? (SO_REUSEADDR, as the server uses: a port a stopped server left
    in TIME_WAIT is free to it, so restarting serve on the same port works.)"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def alive(procs: list) -> list:
    """The psutil processes of `procs` still running; a zombie (exited, not yet reaped) counts as gone."""
    import psutil

    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def stop(proc: subprocess.Popen | None, grace: float = STOP_GRACE_S) -> None:
    """Stop `proc` and every process under it, children first: SIGTERM to the descendants (a flow run's
    engine then reports the run Crashed while its worker is still up), then to `proc`, SIGKILL to whatever
    is left after `grace` seconds each. Descendants in sessions of their own are found all the same."""
    import psutil

    if proc is None:
        return
    try:
        root = psutil.Process(proc.pid)
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        root, children = None, []

    def terminate(procs: list) -> None:
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass

    def wait(procs: list, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while (left := alive(procs)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    terminate(children)
    wait(children, grace)
    if root is not None:
        terminate([root])
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    left = alive([p for p in (root, *children) if p is not None])
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    wait(left, 5)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
