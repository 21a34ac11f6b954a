"""Host side of the sandbox: value types, worker processes, and the `Sandbox` pool.

    >>> from sandbox import Sandbox, Limits
    >>> with Sandbox(Limits(timeout_s=2.0, memory_mb=512)) as sb:
    ...     sb.run("print(1)").stdout
    ...     [r.status for r in sb.run_many(["pass", "while True: pass", "1/0"])]
    '1\\n'
    ['ok', 'timeout', 'error']

Each worker is one long-lived fork-server (`sandbox/_server.py`) inside its own bubblewrap
container; a program costs one fork of that warm interpreter, not a fresh interpreter start.
See `sandbox/__init__.py` for what is and is not protected against.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import queue
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

ExecStatus = Literal["ok", "error", "timeout", "memory", "killed"]
Isolation = Literal["auto", "bwrap", "rlimits"]

# Modules every program gets already imported (cheap, and what test programs commonly use).
DEFAULT_PRELOAD: tuple[str, ...] = (
    "re",
    "math",
    "collections",
    "itertools",
    "functools",
    "heapq",
    "bisect",
    "string",
    "operator",
    "typing",
    "traceback",
    "linecache",
    "types",
    "io",
    "json",
    "atexit",
)

_SERVER_SOURCE = (Path(__file__).parent / "_server.py").read_text()
_UID_BASE = 1_500_000_000  # throw-away uids live above anything a host assigns
_uid_counter = itertools.count()
_STARTUP_TIMEOUT_S = 30.0
_GRACE_S = 10.0  # extra host-side wait beyond a batch's timeouts before declaring the worker hung
_MAX_BATCH = 32  # programs per batch streamed to one worker in run_many (bounded: tail latency)
_WORKER_DIED_NOTE = "[sandbox: the worker died while this program ran]"


class SandboxError(RuntimeError):
    """The sandbox itself cannot work (bubblewrap missing when required, worker will not start, closed)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program.

    timeout_s: wall-clock limit; the program's whole process tree is SIGKILLed at it.
    memory_mb: address-space limit (RLIMIT_AS); exceeding it gives status "memory".
    max_output_bytes: per stream (stdout, stderr); a program writing more is killed ("killed", truncated).
    max_processes: RLIMIT_NPROC for the program's private uid (bounds fork bombs).
    max_open_files: RLIMIT_NOFILE. max_file_mb: RLIMIT_FSIZE, the largest file it may write.
    tmp_mb: size of the worker's private writable tmpfs (bubblewrap only; fixed per worker).
    """

    timeout_s: float = 10.0
    memory_mb: int = 512
    max_output_bytes: int = 1 << 20
    max_processes: int = 32
    max_open_files: int = 256
    max_file_mb: int = 16
    tmp_mb: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"Limits.{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class Call:
    """A program given as a call of a function of a trusted prelude (or preloaded) module:
    `Call("harness.run", {"spec": {...}})` runs `harness.run(spec={...})` in a child exactly as
    isolated as source code is. It spares the child compiling a program and decoding its data:
    the arguments (JSON values) arrive already decoded. Exit status as for a program: 0 when the
    function returns, 1 (and the traceback on stderr) when it raises, SystemExit's code."""

    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        module, _, name = self.function.rpartition(".")
        if not module or not name:
            raise ValueError(f"Call.function must be 'module.function', got {self.function!r}")


Program = str | Call


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one program.

    status: ok (exit 0) | error (non-zero exit, e.g. an uncaught exception) | timeout |
    memory (MemoryError under the address-space limit) | killed (a signal, or the output limit).
    `isolation` names the mechanism that contained it ("bwrap", "rlimits+netns", "rlimits").
    `sandbox_error` is non-empty only when the sandbox itself failed (not the program): it could
    not set the program up, or its worker failed before the program started.
    `program_ran`: the program's first byte ran (the sandbox set it up); whatever happened after
    that is the program's doing: a worker it killed (twice) gives status "killed", not an error.
    `damage`: non-empty when the program left something the sandbox could not undo (files it
    could not remove); its status is what the program got, a verifier should fail it anyway.
    """

    status: ExecStatus
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    isolation: str
    truncated: bool = False
    sandbox_error: str = ""
    program_ran: bool = False
    damage: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ----------------------------------------------------------------------------- availability


@functools.cache
def bwrap_available() -> bool:
    """Whether bubblewrap is installed and can build our container here (probed once)."""
    if shutil.which("bwrap") is None:
        return False
    argv = _bwrap_argv(_interpreter(), (), tmp_mb=8) + ["/bin/true"]
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _interpreter() -> str:
    """The real interpreter binary (a venv's python is a symlink to it)."""
    return os.path.realpath(sys.executable)


def _python_roots(python: str) -> list[str]:
    """Directories the interpreter needs: its install prefix and stdlib."""
    roots = {
        os.path.dirname(os.path.dirname(python)),
        os.path.realpath(sys.base_prefix),
        os.path.realpath(sys.base_exec_prefix),
    }
    # /usr is bound anyway; binding a subdirectory of it again is harmless but pointless.
    return sorted(r for r in roots if r and r != "/" and not r.startswith("/usr/") and r != "/usr")


def _unreadable_to_others(paths: Iterable[str]) -> list[str]:
    """Those of `paths` that a process of another uid cannot reach (a directory on the way
    lacks o+x, or the path itself lacks o+r)."""
    bad = []
    for path in paths:
        p = Path(path)
        try:
            ok = all(os.stat(d).st_mode & 0o001 for d in [*reversed(p.parents), p]) and os.stat(p).st_mode & 0o004
        except OSError:
            ok = False
        if not ok:
            bad.append(path)
    return bad


def _bwrap_argv(python: str, ro_paths: Iterable[str], tmp_mb: int) -> list[str]:
    """bubblewrap command line: nothing of the host but /usr, /etc and the interpreter, read-only;
    no network; private pid/ipc/uts namespaces; size-capped private tmpfs on /tmp and /dev/shm."""
    privileged = os.geteuid() == 0
    argv = [
        "bwrap",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    argv += ["--ro-bind", "/etc", "/etc"]
    for p in [*_python_roots(python), *ro_paths]:
        # bwrap would create missing parents (e.g. /root/.pyenv) with mode 0700 when privileged,
        # unreadable to the sandbox uid: create them world-traversable first.
        for parent in reversed(Path(p).parents[:-1]):
            argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", p, p]
    argv += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--size",
        str(tmp_mb * 1024 * 1024),
        "--tmpfs",
        "/dev/shm",  # POSIX shared memory: capped, and emptied after every program
        "--size",
        str(tmp_mb * 1024 * 1024),
        "--tmpfs",
        "/tmp",
        "--chdir",
        "/tmp",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin",
    ]
    if privileged:
        # Run as root without a user namespace (a userns would map the sandbox uid back to host
        # root, where RLIMIT_NPROC does not bind). Keep only what the fork-server needs to drop
        # each program to a throw-away uid, kill its leftovers, hand it its directory and give it
        # a fresh IPC namespace (CAP_SYS_ADMIN; the program loses it with the uid switch).
        argv += ["--cap-drop", "ALL"]
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_SYS_ADMIN"):
            argv += ["--cap-add", cap]
    else:
        argv += ["--unshare-user", "--uid", "65534", "--gid", "65534"]
    return argv


def _count_own_processes() -> int:
    uid, n = os.getuid(), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                n += os.stat(f"/proc/{name}").st_uid == uid
            except OSError:
                pass
    return n


# ----------------------------------------------------------------------------- one worker


class _WorkerDied(Exception):
    pass


def _frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@dataclass
class _Outcome:
    """What one `_Worker.run` got: the results in order (maybe fewer than the requests); `error`
    when the worker died or hung before the rest; `started` whether the program after the last
    result had started (sent its "started") when that happened; `exited` when the worker said it
    stops after its last result (the rest must run on a fresh worker)."""

    results: list[dict] = field(default_factory=list)
    error: str = ""
    started: bool = False
    exited: bool = False


def _take_message(buf: bytearray) -> dict | None:
    """Remove one complete message from the front of `buf` and return it (None: not complete yet).
    A message is a JSON frame; a result's frame is followed by its stdout and stderr bytes."""
    if len(buf) < 4:
        return None
    n = struct.unpack(">I", buf[:4])[0]
    if len(buf) < 4 + n:
        return None
    head = json.loads(bytes(buf[4 : 4 + n]))
    if not isinstance(head, dict):
        raise ValueError(f"not a JSON object: {head!r:.100}")
    out_len, err_len = int(head.get("out_len", 0)), int(head.get("err_len", 0))
    if out_len < 0 or err_len < 0:
        raise ValueError(f"negative lengths in {head!r:.200}")
    end = 4 + n + out_len + err_len
    if len(buf) < end:
        return None
    if "status" in head:
        head["stdout"] = bytes(buf[4 + n : 4 + n + out_len]).decode("utf-8", errors="replace")
        head["stderr"] = bytes(buf[4 + n + out_len : end]).decode("utf-8", errors="replace")
    del buf[:end]
    return head


class _Worker:
    """One fork-server process and the framed pipe protocol to it. Used by one thread at a time."""

    def __init__(
        self,
        mode: str,
        python: str,
        preload: tuple[str, ...],
        prelude: dict[str, str],
        ro_paths: tuple[str, ...],
        tmp_mb: int,
    ):
        self.mode = mode
        self.hostdir: str | None = None
        uid = None
        if os.geteuid() == 0:
            uid = _UID_BASE + ((os.getpid() & 0x3FFFFF) << 6) + (next(_uid_counter) & 63)
        cfg: dict = {"uid": uid, "preload": list(preload), "prelude": prelude}
        if mode == "bwrap":
            cfg["workdir_base"] = "/tmp"
            cfg["shm_dir"] = "/dev/shm"  # the container's own (see _bwrap_argv); the host's is not ours to empty
            argv = _bwrap_argv(python, ro_paths, tmp_mb)
        else:
            self.hostdir = tempfile.mkdtemp(prefix="pidistill-sandbox-")
            os.chmod(self.hostdir, 0o755)
            cfg["workdir_base"] = self.hostdir
            cfg["unshare_net"] = True
            argv = []
        self.nproc_base = 0 if uid is not None or mode == "bwrap" else _count_own_processes()
        argv += [python, "-I", "-S", "-B", "-c", _SERVER_SOURCE]
        start = _frame(json.dumps(cfg).encode())  # the configuration: its first frame (no argv size limit)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
            start_new_session=True,
            cwd=cfg["workdir_base"] if mode != "bwrap" else "/",
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr  # all three are pipes (above)
        self.stdin, self.stdout, self.stderr = self.proc.stdin, self.proc.stdout, self.proc.stderr
        os.set_blocking(self.stdin.fileno(), False)  # writes honour a deadline (see request)
        try:
            deadline = time.monotonic() + _STARTUP_TIMEOUT_S
            self._write(start, deadline)
            hello = self._recv(deadline)
            if not hello.get("ready"):
                raise _WorkerDied(f"worker did not start: {hello}")
        except BaseException:
            self.close(graceful=False)
            raise
        self.isolation = "bwrap" if mode == "bwrap" else ("rlimits+netns" if hello.get("netns") else "rlimits")

    def run(self, requests: list[bytes], timeout_s: float) -> _Outcome:
        """Stream `requests` (each a header frame and its body) to the worker while reading its
        results as they come (one select loop: the worker answers while it is still being fed, so
        writing everything first could deadlock both sides on full pipes). Stops at the first
        result after which the worker exits, or when it dies or does not finish in `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        data = memoryview(b"".join(requests))
        buf = bytearray()
        outcome = _Outcome()
        try:
            wfd, rfd = self.stdin.fileno(), self.stdout.fileno()
        except ValueError as exc:  # closed
            outcome.error = f"worker pipes closed: {exc}"
            return outcome
        writing = True
        while len(outcome.results) < len(requests):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome.error = "worker did not answer in time"
                return outcome
            want_write = [wfd] if writing and data else []
            try:
                readable, writable, _ = select.select([rfd], want_write, [], remaining)
                if writable:
                    try:
                        data = data[os.write(wfd, data[: 1 << 20]) :]
                    except BlockingIOError:
                        pass
                    except OSError:  # it stopped reading (it exits after a result): read what it said
                        writing = False
                chunk = os.read(rfd, 1 << 20) if readable else b""
            except (OSError, ValueError) as exc:
                outcome.error = f"worker pipe failed: {exc}"
                return outcome
            if readable and not chunk:
                outcome.error = f"worker exited (code {self.proc.poll()}): {self._stderr_tail()}"
                return outcome
            buf += chunk
            try:
                while (msg := _take_message(buf)) is not None:
                    if msg.get("started"):
                        outcome.started = True
                        continue
                    outcome.results.append(msg)
                    outcome.started = False
                    if msg.get("exit"):
                        outcome.exited = True
                        return outcome
            except (ValueError, KeyError, TypeError) as exc:
                outcome.error = f"bad reply from worker: {type(exc).__name__}: {exc}"
                return outcome
        return outcome

    def _write(self, payload: bytes, deadline: float) -> None:
        data = memoryview(payload)
        try:
            fd = self.stdin.fileno()
            while data:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                    raise _WorkerDied("worker does not read its requests")
                try:
                    data = data[os.write(fd, data) :]
                except BlockingIOError:
                    pass
        except (OSError, ValueError) as exc:  # BrokenPipeError: it is gone
            raise _WorkerDied(f"cannot write to worker: {exc}") from exc

    def _recv(self, deadline: float) -> dict:
        head = self._read_exact(4, deadline)
        return json.loads(self._read_exact(struct.unpack(">I", head)[0], deadline))

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd, buf = self.stdout.fileno(), bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise _WorkerDied("worker did not answer in time")
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise _WorkerDied(f"worker exited (code {self.proc.poll()}): {self._stderr_tail()}")
            buf += chunk
        return bytes(buf)

    def _stderr_tail(self) -> str:
        try:
            fd = self.stderr.fileno()
            if select.select([fd], [], [], 0.2)[0]:
                return os.read(fd, 4000).decode(errors="replace").strip()[-1000:]
        except (OSError, ValueError):
            pass
        return ""

    def close(self, graceful: bool = True) -> None:
        """Stop the worker. Closing its stdin asks it to exit; SIGKILL if it does not (killing
        bwrap takes the whole container with it, via --die-with-parent)."""
        try:
            if graceful:
                self.stdin.close()
                self.proc.wait(timeout=2)
        except (subprocess.TimeoutExpired, OSError, ValueError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.stdin, self.stdout, self.stderr):
            try:
                f.close()
            except OSError:
                pass
        if self.hostdir:
            shutil.rmtree(self.hostdir, ignore_errors=True)


class _Slot:
    """A place in the pool; holds a live worker or None (started lazily, restarted after a failure)."""

    def __init__(self) -> None:
        self.worker: _Worker | None = None


# ----------------------------------------------------------------------------- the pool


class Sandbox:
    """A pool of isolated fork-server workers. Thread-safe; close it (or use `with`).

    workers: parallelism (default: one per CPU this process may use; more measured slower on
      MBPP, benchmarks/sandbox_throughput.py: the kernel work of fork and exit dominates).
    isolation: "auto" (bubblewrap when it works here, else rlimits), "bwrap" (required), "rlimits".
    ro_paths: extra host directories to expose read-only (e.g. a site-packages).
    preload: stdlib modules imported once per worker, so programs get them for free.
    prelude: {module name: source} of TRUSTED helper modules run once per worker (with the
      worker's privileges, before any program) and importable by every program; e.g. a test
      harness that would otherwise be compiled again for each program.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        workers: int | None = None,
        isolation: Isolation = "auto",
        python: str | None = None,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        prelude: dict[str, str] | None = None,
        ro_paths: tuple[str, ...] = (),
    ) -> None:
        self.limits = limits or Limits()
        self.n_workers = workers or len(os.sched_getaffinity(0))
        if self.n_workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.n_workers}")
        if isolation not in ("auto", "bwrap", "rlimits"):
            raise ValueError(f"isolation must be auto|bwrap|rlimits, got {isolation!r}")
        if isolation == "bwrap" and not bwrap_available():
            raise SandboxError(
                "isolation='bwrap' but bubblewrap is not installed or cannot run here (apt-get install bubblewrap)"
            )
        self.mode = "rlimits" if isolation == "rlimits" or not bwrap_available() else "bwrap"
        if self.mode == "rlimits" and isolation == "auto":
            log.warning("bubblewrap unavailable: sandbox falls back to rlimits-only isolation")
        self._python = python or _interpreter()
        if (
            self.mode == "rlimits"
            and os.geteuid() == 0
            and (hidden := _unreadable_to_others(_python_roots(self._python)))
        ):
            # (bwrap mode binds these directories with the parents made traversable)
            log.warning(
                "sandbox programs run as a throw-away uid that cannot read %s: only the preloaded "
                "modules are importable there; install bubblewrap, or use an interpreter installed "
                "outside private directories such as /root",
                ", ".join(hidden),
            )
        self._preload = tuple(preload)
        self.prelude = dict(prelude or {})
        self._ro_paths = tuple(ro_paths)
        self._slots: queue.Queue[_Slot] = queue.Queue()
        self._all_slots = [_Slot() for _ in range(self.n_workers)]
        for s in self._all_slots:
            self._slots.put(s)
        # Workers are started from these long-lived threads only: bwrap's --die-with-parent (and
        # PR_SET_PDEATHSIG generally) fires when the *thread* that spawned it exits.
        self._spawner = ThreadPoolExecutor(self.n_workers, thread_name_prefix="sandbox-spawn")
        self._dispatch = ThreadPoolExecutor(self.n_workers, thread_name_prefix="sandbox-run")
        self._closed = False
        self._state_lock = threading.Lock()
        self._owner_pid = os.getpid()
        self._isolation: str | None = None
        self._finalizer = weakref.finalize(
            self, _shutdown, self._all_slots, self._spawner, self._dispatch, self._owner_pid
        )

    # -- public API

    @property
    def uid_separated(self) -> bool:
        """Whether workers run each program as a separate throw-away uid (the host process is
        root). Without it a program shares its fork-server's uid: it can kill the server, and only
        the server's non-dumpable flag keeps it from reading the server's memory or writing its
        reply pipe (forging other programs' results); do not trust verdicts then."""
        return os.geteuid() == 0

    @property
    def isolation(self) -> str:
        """The isolation label results carry (starts one worker if none has started yet)."""
        if self._isolation is None:
            self.run("pass")
        return self._isolation or self.mode

    def run(self, code: Program, limits: Limits | None = None) -> ExecResult:
        """Run one program (Python source, or a `Call`) and return its result. Never raises for a bad program."""
        self._check_open()
        _check_programs([code])
        limits = limits or self.limits
        slot = self._slots.get()
        try:
            return self._run_on(slot, [code], limits)[0]
        finally:
            self._slots.put(slot)

    def run_many(self, programs: list[Program], limits: Limits | None = None) -> list[ExecResult]:
        """Run programs in parallel across the workers; results in input order."""
        self._check_open()
        _check_programs(programs)
        limits = limits or self.limits
        results: list[ExecResult | None] = [None] * len(programs)
        lock = threading.Lock()
        taken = 0

        def next_chunk() -> list[int]:
            # Chunks amortise the host<->worker round trip; they shrink towards the end so
            # that all workers finish together.
            nonlocal taken
            with lock:
                left = len(programs) - taken
                k = max(1, min(_MAX_BATCH, left // (2 * self.n_workers)))
                chunk = list(range(taken, min(taken + k, len(programs))))
                taken += len(chunk)
                return chunk

        def drain() -> None:
            slot = self._slots.get()
            try:
                while chunk := next_chunk():
                    for i, r in zip(chunk, self._run_on(slot, [programs[i] for i in chunk], limits)):
                        results[i] = r
            finally:
                self._slots.put(slot)

        futures = [self._dispatch.submit(drain) for _ in range(min(self.n_workers, len(programs)))]
        for f in futures:
            f.result()
        return [r for r in results if r is not None]

    def start(self) -> None:
        """Start the workers that are not running yet, in the background, and return at once.
        A pool otherwise starts them on first use; call this when there is other work to do
        meanwhile (building the programs, say). A program waits for its worker as usual."""
        self._check_open()
        free: list[_Slot] = []
        while True:
            try:
                free.append(self._slots.get_nowait())
            except queue.Empty:
                break
        for slot in free:
            if slot.worker is not None:
                self._slots.put(slot)
                continue
            try:
                self._spawner.submit(self._start_in_background, slot)
            except RuntimeError:  # closed meanwhile
                self._slots.put(slot)

    def _start_in_background(self, slot: _Slot) -> None:
        """(On a spawner thread.) Start the slot's worker, then hand the slot back to the pool."""
        try:
            if self._closed:
                return
            worker = self._new_worker()
        except Exception as exc:  # the slot stays empty: its next program starts (and reports) it
            log.warning("sandbox worker did not start in the background: %s", exc)
        else:
            with self._state_lock:
                if self._closed:
                    worker.close(graceful=False)
                else:
                    slot.worker = worker
                    self._isolation = worker.isolation
        finally:
            self._slots.put(slot)

    def close(self) -> None:
        """Stop every worker (and with it every process it ran). Idempotent."""
        with self._state_lock:
            self._closed = True
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        raise TypeError("a Sandbox holds live processes and cannot be pickled; create one per process")

    # -- internals

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("sandbox is closed")
        if os.getpid() != self._owner_pid:
            raise SandboxError("sandbox was created in another process (after fork); create a new one here")

    def _request(self, program: Program, limits: Limits, nproc_base: int) -> bytes:
        """One program on the wire: a small trusted header frame, then the body (source, or the
        Call's JSON arguments) that only the program's own child reads."""
        if isinstance(program, Call):
            head: dict[str, Any] = {"kind": "call", "function": program.function}
            body = json.dumps(program.kwargs).encode()
        else:
            head = {"kind": "code"}
            body = program.encode("utf-8", "surrogatepass")
        head.update(
            timeout_s=limits.timeout_s,
            memory_mb=limits.memory_mb,
            max_output_bytes=limits.max_output_bytes,
            max_file_mb=limits.max_file_mb,
            max_open_files=limits.max_open_files,
            nproc=limits.max_processes + nproc_base,
            body_len=len(body),
        )
        return _frame(json.dumps(head).encode()) + body

    def _new_worker(self) -> _Worker:
        """(On a spawner thread.) A new worker for this pool."""
        return _Worker(self.mode, self._python, self._preload, self.prelude, self._ro_paths, self.limits.tmp_mb)

    def _start_worker(self) -> _Worker:
        try:
            future = self._spawner.submit(self._new_worker)
        except RuntimeError as exc:  # the spawner was shut down by close()
            raise SandboxError("sandbox is closed") from exc
        return future.result()

    def _run_on(self, slot: _Slot, codes: list[Program], limits: Limits) -> list[ExecResult]:
        """Run `codes` one after another on the slot's worker, streamed as one batch; results in order.

        When the worker fails (dies, hangs, breaks) the results it sent stand; the program it was
        running runs again alone on a fresh worker, then the rest as a batch. If the worker fails
        again under that program, the program gets status "killed" when it had started (the
        program's doing: it killed its worker, say) and a sandbox error when it had not. A worker
        that will not start, twice in a row, fails every remaining program with a sandbox error.
        A result after which the worker exits by itself (it could not clean up after a program)
        stands too; the rest run on a fresh worker."""
        results: list[ExecResult] = []
        failures: list[str] = []  # worker failures under the next program
        while len(results) < len(codes):
            i = len(results)
            chunk = codes[i : i + 1] if failures else codes[i:]
            try:
                if slot.worker is None:
                    slot.worker = self._start_worker()
                    self._isolation = slot.worker.isolation
            except (_WorkerDied, OSError, ValueError, KeyError) as exc:
                failures.append(f"worker did not start: {type(exc).__name__}: {exc}")
                log.warning("sandbox worker failed to start (%s)", failures[-1])
                if len(failures) >= 2:
                    results += [self._failed(failures[-1])] * (len(codes) - i)
                continue
            w = slot.worker
            requests = [self._request(code, limits, w.nproc_base) for code in chunk]
            outcome = w.run(requests, len(chunk) * (limits.timeout_s + 1.0) + _GRACE_S)
            for res in outcome.results:
                if res.get("sandbox_error", "").startswith("server failure"):  # the server broke on it
                    outcome.error = res["sandbox_error"] + " " + str(res.get("server_trace", ""))[-500:]
                    outcome.started = bool(res.get("program_ran"))
                    break
                results.append(_to_result(res, w.isolation))
                failures = []
            if outcome.error or outcome.exited:
                slot.worker = None
                w.close(graceful=False)
            if not outcome.error:
                continue
            log.warning("sandbox worker failed (%s); restarting it", outcome.error)
            failures.append(outcome.error)
            if outcome.started and len(failures) >= 2:  # it died again while this program ran
                results.append(
                    ExecResult(
                        status="killed",
                        returncode=None,
                        stdout="",
                        stderr=_WORKER_DIED_NOTE,
                        duration_s=0.0,
                        isolation=w.isolation,
                        program_ran=True,
                    )
                )
                failures = []
            elif len(failures) >= 2:
                results.append(self._failed(outcome.error))
                failures = []
        return results

    def _failed(self, error: str) -> ExecResult:
        return ExecResult(
            status="error",
            returncode=None,
            stdout="",
            stderr="",
            duration_s=0.0,
            isolation=self._isolation or self.mode,
            sandbox_error=f"sandbox worker failed: {error}",
        )


def _check_programs(programs: list[Program]) -> None:
    for i, program in enumerate(programs):
        if not isinstance(program, (str, Call)):
            raise TypeError(
                f"program {i} is a {type(program).__name__}: a program is Python source (str) or a sandbox.Call"
            )


def _to_result(res: dict, isolation: str) -> ExecResult:
    return ExecResult(
        status=res["status"],
        returncode=res.get("returncode"),
        stdout=res.get("stdout", ""),
        stderr=res.get("stderr", ""),
        duration_s=float(res.get("duration_s", 0.0)),
        isolation=isolation,
        truncated=bool(res.get("truncated")),
        sandbox_error=res.get("sandbox_error", ""),
        program_ran=bool(res.get("program_ran")),
        damage=res.get("damage", ""),
    )


def _shutdown(slots: list[_Slot], spawner: ThreadPoolExecutor, dispatch: ThreadPoolExecutor, owner_pid: int) -> None:
    """Close all workers in parallel-ish (closing stdin first, so they exit together)."""
    if os.getpid() != owner_pid:
        return  # a forked copy of the owner: the workers are not ours to stop
    workers = [s.worker for s in slots if s.worker is not None]
    for s in slots:
        s.worker = None
    for w in workers:
        try:
            w.stdin.close()
        except OSError:
            pass
    for w in workers:
        w.close(graceful=True)
    dispatch.shutdown(wait=False, cancel_futures=True)
    spawner.shutdown(wait=False, cancel_futures=True)
