"""Child processes of a task that go when it goes: the training launcher, the tiny model's build.

    code, tail = run_child(["-m", "models.tiny", ...], env, on_line=print)

The child runs `python <args>` with its output (stdout and stderr) handed line by line to `on_line`; the
last lines come back for an error message. It dies with this process: Linux's parent-death signal
(SIGTERM) is set in the child before it execs the real command, so even a SIGKILL here leaves no child
holding a GPU or building on; and when this process unwinds (SIGTERM turned into SystemExit, Ctrl-C, an
exception), the child is terminated before the error goes on.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

TAIL_LINES = 60

# Runs first in the child: SIGTERM when this process dies (even by SIGKILL), then exec the command (the
# signal survives exec). Not Popen's preexec_fn, which may deadlock in a threaded process.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "  # 1 = PR_SET_PDEATHSIG
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def run_child(args: Sequence[str], env: Mapping[str, str], on_line: Callable[[str], None]) -> tuple[int, str]:
    """Run `python *args` (the repository on its PYTHONPATH) to its end; (exit status, its last output lines)."""
    repo = str(Path(__file__).resolve().parents[1])
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))}
    argv = [sys.executable, "-c", _DIE_WITH_PARENT, *args]
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, errors="replace"
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            on_line(line)
        return proc.wait(), "\n".join(tail)
    finally:
        if proc.poll() is None:  # this process is unwinding: the child goes first
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
