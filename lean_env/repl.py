"""One Lean REPL process: start, talk, time out, restart. All subprocess I/O of
`lean_env` lives in this file.

    >>> cfg = ReplConfig(project_dir="~/lean/minif2f-project")      # `lake env repl` there
    >>> with LeanRepl(cfg) as repl:
    ...     out = repl.check("theorem t : 1 + 1 = 2 := by norm_num", header="import Mathlib")
    >>> out.status, out.response.messages
    ('ok', ())

Design:

* The REPL (leanprover-community/repl) is started as ``lake env repl`` (the
  command and the working directory are configurable) in a Lake project that
  has Mathlib built. Requests and responses are framed as `lean_env.protocol`
  describes.
* A *header* (``import Mathlib`` + options + ``open``) is imported once per
  process with a ``{"cmd": header}`` command; every proof then runs as
  ``{"cmd": proof, "env": <header env>}``. Importing Mathlib costs seconds to
  minutes; running a proof on top of the imported environment costs only the
  proof. The header env is cached per header text.
* Each request has a wall-clock timeout. On a timeout the process group is
  killed (a Lean tactic cannot be interrupted over the protocol); on a crash
  (EOF on stdout: out of memory, a REPL panic) the process is reaped. Either
  way the next request starts a fresh process and re-imports the header.
* Memory: the process runs under ``RLIMIT_AS`` = `memory_mb` (set by a tiny
  exec shim, so it holds for `lake` and the `repl` it spawns). The address
  space includes the memory-mapped ``.olean`` files (several GB for Mathlib)
  and whatever Lean's runtime reserves, so keep it generous (default 32 GiB);
  if Lean cannot even start under it, raise it or set ``rlimit="DATA"``
  (RLIMIT_DATA: only private writable memory, i.e. the heap, counts; Linux
  >= 4.7). Lean REPLs also grow with every command (each keeps its
  environment snapshot), so after a request whose process tree RSS exceeds
  `max_rss_mb` the process is recycled before the next one.
* Lean errors (type errors, unsolved goals, ``{"message": ...}``) come back as
  values. Process failures are raised (`ReplTimeout`, `ReplCrashed`,
  `ReplStartError`, all carrying the tail of the REPL's stderr); a missing
  binary or project raises `LeanNotFound`. `LeanRepl.check` turns per-proof
  timeouts and crashes into a `CheckOutcome` so one bad proof cannot abort a
  batch, but start-up failures still raise.
"""

from __future__ import annotations

import codecs
import collections
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lean_env.protocol import (
    Command,
    CommandResponse,
    LeanError,
    ProtocolError,
    Request,
    Response,
    ResponseBuffer,
    frame_request,
    parse_response,
)

__all__ = [
    "CheckOutcome",
    "DEFAULT_COMMAND",
    "LeanNotFound",
    "LeanRepl",
    "ReplConfig",
    "ReplCrashed",
    "ReplError",
    "ReplProtocolError",
    "ReplStartError",
    "ReplTimeout",
    "preflight",
    "run_quick",
]

DEFAULT_COMMAND: tuple[str, ...] = ("lake", "env", "repl")
PROJECT_ENV_VAR = "PIDISTILL_LEAN_PROJECT"
COMMAND_ENV_VAR = "PIDISTILL_LEAN_REPL"

# Exec shim: set RLIMIT_AS, then become the real command (same pid, so the
# limit covers it and everything it spawns; no preexec_fn in a threaded parent).
_RLIMIT_SHIM = (
    "import os,resource,sys\n"
    "r=getattr(resource,'RLIMIT_'+sys.argv[1]);n=int(sys.argv[2]);h=resource.getrlimit(r)[1]\n"
    "n=n if h==resource.RLIM_INFINITY else min(n,h)\n"
    "resource.setrlimit(r,(n,h))\n"
    "os.execv(sys.argv[3],sys.argv[3:])\n"
)


# --------------------------------------------------------------------------- errors


class LeanNotFound(RuntimeError):
    """Lean (lake / repl / the project) is not installed or not configured."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Lean not found, see pidistill doctor: {detail}")
        self.detail = detail


class ReplError(RuntimeError):
    """A failure of the REPL process itself (not a Lean error in a proof)."""

    def __init__(self, message: str, stderr: str = "", returncode: int | None = None) -> None:
        full = message
        if returncode is not None:
            full += f" (exit code {returncode})"
        if stderr.strip():
            full += f"\n--- REPL stderr (tail) ---\n{stderr.rstrip()}"
        super().__init__(full)
        self.stderr = stderr
        self.returncode = returncode


class ReplStartError(ReplError):
    """The REPL did not start, or its header did not import."""


class ReplCrashed(ReplError):
    """The REPL exited (or closed stdout) while a request was pending."""


class ReplTimeout(ReplError):
    """No answer within the timeout; the REPL was killed."""


class ReplProtocolError(ReplError):
    """The REPL answered something that is not a protocol response."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ReplConfig:
    """How to run a REPL. `command` may be a string (split like a shell) or a
    sequence; its first word is looked up on PATH (or, if it contains a slash,
    relative to `project_dir`). Defaults come from ``$PIDISTILL_LEAN_REPL``
    (command) and ``$PIDISTILL_LEAN_PROJECT`` (project) when those are set."""

    command: tuple[str, ...] | str | None = None
    project_dir: Path | str | None = None
    timeout: float = 60.0  # per proof / request, seconds
    startup_timeout: float = 600.0  # start + header import, seconds
    memory_mb: int | None = 32768  # memory rlimit of the process; None/0 = unlimited
    rlimit: Literal["AS", "DATA"] = "AS"  # which limit: address space, or (Linux >= 4.7) private writable memory
    max_rss_mb: int | None = 12288  # recycle the process once its tree RSS exceeds this
    max_commands: int | None = None  # recycle after this many proof commands
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables
    stderr_lines: int = 200  # stderr lines kept for error reports

    def __post_init__(self) -> None:
        command = self.command
        if command is None:
            command = os.environ.get(COMMAND_ENV_VAR) or DEFAULT_COMMAND
        if isinstance(command, str):
            command = tuple(shlex.split(command))
        command = tuple(str(c) for c in command)
        if not command:
            raise ValueError("ReplConfig.command is empty")
        object.__setattr__(self, "command", command)
        project = self.project_dir
        if project is None and os.environ.get(PROJECT_ENV_VAR):
            project = os.environ[PROJECT_ENV_VAR]
        if project is not None:
            project = Path(project).expanduser()
        object.__setattr__(self, "project_dir", project)
        if isinstance(self.env, dict):
            object.__setattr__(self, "env", tuple(sorted(self.env.items())))
        if self.rlimit not in ("AS", "DATA"):
            raise ValueError(f"rlimit must be 'AS' or 'DATA', got {self.rlimit!r}")
        if self.timeout <= 0 or self.startup_timeout <= 0:
            raise ValueError("timeouts must be positive")

    @property
    def argv(self) -> tuple[str, ...]:
        """The command as split words (`command` is normalised to a tuple when the config is built)."""
        assert isinstance(self.command, tuple)
        return self.command

    @property
    def uses_lake(self) -> bool:
        return Path(self.argv[0]).name == "lake"


def _search_path(config: ReplConfig) -> str:
    env = dict(os.environ)
    env.update(dict(config.env))
    return env.get("PATH", os.defpath)


def preflight(config: ReplConfig) -> str:
    """Check that the REPL can be started at all (no process is run) and return
    the resolved executable. Raises LeanNotFound with what is missing."""
    exe = config.argv[0]
    project = config.project_dir
    if config.uses_lake and project is None:
        raise LeanNotFound(
            f"no Lean project configured: set ${PROJECT_ENV_VAR} (or the project_dir option) to a Lake "
            "project with Mathlib and the REPL built"
        )
    if project is not None:
        if not Path(project).is_dir():
            raise LeanNotFound(f"Lean project directory {project} does not exist")
        if config.uses_lake and not any((Path(project) / f).is_file() for f in ("lakefile.lean", "lakefile.toml")):
            raise LeanNotFound(f"{project} is not a Lake project (no lakefile.lean / lakefile.toml)")
    if os.sep in exe:
        path = Path(exe).expanduser()
        if not path.is_absolute() and project is not None:
            path = Path(project) / path
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LeanNotFound(f"REPL executable {path} not found")
        return str(path.resolve())
    found = shutil.which(exe, path=_search_path(config))
    if found is None:
        raise LeanNotFound(f"`{exe}` is not on PATH (install elan, or set the repl command)")
    return found


def run_quick(argv: Sequence[str], cwd: Path | str | None = None, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run a short command to completion: (returncode, stdout, stderr).
    returncode is 127 if the program is missing and 124 on timeout. (Used by
    `lean_env.doctor`; kept here so all subprocess calls live in one file.)"""
    try:
        proc = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as exc:
        return 127, "", str(exc)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out, f"timed out after {timeout}s"
    return proc.returncode, proc.stdout, proc.stderr


# --------------------------------------------------------------------------- outcome


@dataclass(frozen=True)
class CheckOutcome:
    """What happened to one proof. status ``ok``: `response` holds Lean's
    answer (which may still report errors); ``timeout`` / ``crash``: the
    process failed and `detail` says how (with stderr)."""

    status: Literal["ok", "timeout", "crash"]
    response: CommandResponse | LeanError | None = None
    detail: str = ""
    seconds: float = 0.0


# --------------------------------------------------------------------------- the process


@dataclass
class ReplStats:
    starts: int = 0
    header_imports: int = 0
    commands: int = 0
    timeouts: int = 0
    crashes: int = 0
    recycles: int = 0
    last_rss_mb: float = 0.0
    noise: list[str] = field(default_factory=list)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the REPL's process group (it was started in its own session, so
    the group is exactly the REPL and what it spawned) and reap it."""
    # Even if the leader (lake) is gone, its child (the repl) may still hold the
    # group; Linux does not reuse a pid while it names a live process group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL not delivered
        pass
    # stderr is left to the drain thread, which stops at end of file
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


class LeanRepl:
    """One REPL process, started lazily, restarted after a crash or timeout.
    Thread-safe (one request at a time); use `lean_env.pool.ReplPool` for
    parallelism."""

    def __init__(self, config: ReplConfig | None = None, name: str = "repl") -> None:
        self.config = config or ReplConfig()
        self.name = name
        self.stats = ReplStats()
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=self.config.stderr_lines)
        self._stderr_thread: threading.Thread | None = None
        self._buffer = ResponseBuffer()
        self._ready: collections.deque[str] = collections.deque()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._headers: dict[str, int | None] = {}
        self._proc_commands = 0
        self._finalizer: weakref.finalize | None = None

    # ---- lifecycle

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the process if it is not running (no header)."""
        with self._lock:
            if self.alive:
                return
            if self._proc is not None:
                self._reap()
            exe = preflight(self.config)
            argv = [exe, *self.config.argv[1:]]
            if self.config.memory_mb:
                limit = str(int(self.config.memory_mb) << 20)
                argv = [sys.executable, "-S", "-c", _RLIMIT_SHIM, self.config.rlimit, limit, *argv]
            env = dict(os.environ)
            env.update(dict(self.config.env))
            self._stderr = collections.deque(maxlen=self.config.stderr_lines)  # one per process
            self._buffer = ResponseBuffer()
            self._ready.clear()
            self._decoder.reset()
            self._headers = {}
            self._proc_commands = 0
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=self.config.project_dir,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    start_new_session=True,
                    bufsize=0,
                )
            except OSError as exc:
                raise ReplStartError(f"could not start {' '.join(argv)}: {exc}") from exc
            self._proc = proc
            self.stats.starts += 1
            self._stderr_thread = threading.Thread(
                target=self._drain_stderr, args=(proc, self._stderr), name=f"{self.name}-stderr", daemon=True
            )
            self._stderr_thread.start()
            self._finalizer = weakref.finalize(self, _kill_group, proc)

    def close(self) -> None:
        """Stop the process: close stdin (the REPL exits at end of input), then kill."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._reap()

    def restart(self) -> None:
        with self._lock:
            self._reap()
            self.start()

    def __enter__(self) -> LeanRepl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        self._headers = {}
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is not None:
            _kill_group(proc)

    @staticmethod
    def _drain_stderr(proc: subprocess.Popen, sink: collections.deque) -> None:
        stream = proc.stderr
        if stream is None:
            return
        try:
            for raw in iter(stream.readline, b""):
                sink.append(raw.decode("utf-8", "replace").rstrip("\n"))
        except (OSError, ValueError):
            pass

    def stderr_tail(self, wait: float = 0.0) -> str:
        """The last lines the process wrote to stderr; with `wait`, first give the
        drain thread that long to reach end of file (for a process that died)."""
        thread = self._stderr_thread
        if wait and thread is not None:
            thread.join(timeout=wait)
        return "\n".join(self._stderr)

    # ---- raw requests

    def run(self, request: Request, timeout: float | None = None) -> Response:
        """Send one request, return the typed response. Starts the process if
        needed. Raises ReplTimeout / ReplCrashed / ReplProtocolError (the
        process is then dead and the next call starts a new one)."""
        with self._lock:
            self.start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            timeout = self.config.timeout if timeout is None else timeout
            deadline = time.monotonic() + timeout
            if self._ready:  # output nobody asked for: keep it out of the pairing
                self.stats.noise.extend(self._ready)
                self._ready.clear()
            try:
                proc.stdin.write(frame_request(request).encode("utf-8"))
                proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                self._crashed(f"REPL closed its input ({exc})")
            text = self._read_response(proc, deadline, timeout)
            try:
                return parse_response(text, request)
            except ProtocolError as exc:
                stderr = self.stderr_tail()
                self._reap()
                raise ReplProtocolError(f"unparseable REPL output: {exc}", stderr) from exc

    def _read_response(self, proc: subprocess.Popen, deadline: float, timeout: float) -> str:
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        while not self._ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stats.timeouts += 1
                stderr = self.stderr_tail()
                self._reap()
                raise ReplTimeout(f"Lean REPL gave no answer within {timeout:g}s and was killed", stderr)
            ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._crashed("Lean REPL exited while a request was pending")
            self._ready.extend(self._buffer.feed(self._decoder.decode(chunk)))
            if self._buffer.noise:
                self.stats.noise.extend(self._buffer.noise)
                self._buffer.noise.clear()
        return self._ready.popleft()

    def _crashed(self, what: str) -> None:
        proc = self._proc
        returncode = None
        if proc is not None:
            try:
                returncode = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                returncode = None
        self.stats.crashes += 1
        stderr = self.stderr_tail(wait=1.0)
        self._reap()
        raise ReplCrashed(what, stderr, returncode)

    # ---- headers and proofs

    def header_env(self, header: str) -> int | None:
        """The env id with `header` imported in this process (importing it on
        first use). None for an empty header (each command starts fresh)."""
        with self._lock:
            if not header.strip():
                return None
            self.start()
            if header in self._headers:
                return self._headers[header]
            try:
                resp = self.run(Command(cmd=header), timeout=self.config.startup_timeout)
            except ReplError as exc:
                raise ReplStartError(f"Lean REPL failed while importing the header: {exc}") from exc
            if isinstance(resp, LeanError) or not isinstance(resp, CommandResponse) or resp.env is None:
                raise ReplStartError(f"Lean REPL refused the header: {resp}", self.stderr_tail())
            if resp.has_errors:
                errors = "\n".join(f"{m.pos.line}:{m.pos.column}: {m.data}" for m in resp.errors)
                raise ReplStartError(
                    f"the header does not compile (is Mathlib built in {self.config.project_dir}? see pidistill "
                    f"doctor):\n{errors}",
                    self.stderr_tail(),
                )
            self.stats.header_imports += 1
            self._headers[header] = resp.env
            return resp.env

    def check(self, code: str, header: str = "", timeout: float | None = None) -> CheckOutcome:
        """Run `code` on top of `header`. Timeouts and crashes while checking
        become outcomes (the process is restarted, header re-imported, on the
        next call); failures to start or import the header raise."""
        with self._lock:
            env = self.header_env(header) if header.strip() else None
            if env is None:
                self.start()
            t0 = time.monotonic()
            try:
                resp = self.run(Command(cmd=code, env=env), timeout=timeout)
            except ReplTimeout as exc:
                return CheckOutcome("timeout", None, str(exc), time.monotonic() - t0)
            except ReplError as exc:
                return CheckOutcome("crash", None, str(exc), time.monotonic() - t0)
            seconds = time.monotonic() - t0
            self.stats.commands += 1
            self._proc_commands += 1
            self._maybe_recycle()
            assert isinstance(resp, (CommandResponse, LeanError))
            return CheckOutcome("ok", resp, "", seconds)

    def rss_mb(self) -> float:
        """Resident memory of the process tree, in MiB (0 if not running)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return 0.0
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil is a dependency
            return 0.0
        try:
            root = psutil.Process(proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / (1 << 20)

    def _maybe_recycle(self) -> None:
        cfg = self.config
        if cfg.max_rss_mb:
            self.stats.last_rss_mb = self.rss_mb()
            if self.stats.last_rss_mb > cfg.max_rss_mb:
                self.stats.recycles += 1
                self._reap()
                return
        if cfg.max_commands and self._proc_commands >= cfg.max_commands:
            self.stats.recycles += 1
            self._reap()
