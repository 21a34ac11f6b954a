"""The fork-server that runs inside each sandbox worker (stdlib only, no imports from pidistill).

The host starts it as `python -I -S -B -c <this file's source>` (inside bubblewrap when
available) and talks to it over stdin/stdout with length-prefixed JSON frames (4-byte
big-endian length, then UTF-8 JSON): first the host's configuration; after the
server's `{"ready": true, ...}` hello, each request is a batch of programs, run one by one:

    host -> server  {"batch": [{"code": "...", "timeout_s": 2.0, "memory_mb": 512, ...}, ...]}
    server -> host  {"results": [{"status": "ok", "returncode": 0, "stdout": "...", ...}, ...]}

For each request the server forks a child that drops privileges (new session, rlimits,
throw-away uid when the server holds CAP_SETUID, private working directory, clean
environment) and then `exec`s the program inside the already-warm interpreter: no fresh
interpreter start per program. The server is a child subreaper, so every process a program
leaves behind (daemons included) is re-parented to it and killed before the result is sent.
"""

import atexit
import builtins
import ctypes
import json
import linecache
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback
import types

# Status bytes the child writes on its private status pipe (fd 3).
_ST_MEMORY = b"M"  # the program died of MemoryError
_ST_SETUP = b"S"  # the sandbox could not set the child up: an infrastructure failure

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000


# ----------------------------------------------------------------------------- framing


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv(fd):
    head = _read_exact(fd, 4)
    if head is None:
        return None
    body = _read_exact(fd, struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)


def _send(fd, obj):
    body = json.dumps(obj).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(fd, data) :]


# ----------------------------------------------------------------------------- libc helpers


_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option, arg):
    return _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) == 0


def _unshare(flags):
    return _libc.unshare(ctypes.c_int(flags)) == 0


# ----------------------------------------------------------------------------- child side


def _child_plan(req):
    """What the child needs, prepared by the server before the fork. Whatever the child computes
    itself it computes on copy-on-write memory, where each object touched costs a page fault."""
    mem = int(req["memory_mb"]) * 1024 * 1024
    cpu = int(req["timeout_s"]) + 2  # wall-clock timeout is the real limit; this is a backstop
    files = int(req["max_file_mb"]) * 1024 * 1024
    limits = [
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_DATA, (mem, mem)),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_FSIZE, (files, files)),
        (resource.RLIMIT_NOFILE, (int(req["max_open_files"]),) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    if req.get("nproc") is not None:
        limits.append((resource.RLIMIT_NPROC, (int(req["nproc"]),) * 2))
    main = types.ModuleType("__main__")  # a fresh __main__ per program
    main.__dict__["__builtins__"] = builtins
    if "call" in req:
        module, _, name = req["call"].rpartition(".")
        target = getattr(sys.modules.get(module), name, None)  # trusted prelude code: resolved here
        run = (target, req["kwargs"], module)
    else:
        source = req["code"]
        # Let tracebacks show the program's source lines.
        linecache.cache["<program>"] = (len(source), None, source.splitlines(True), "<program>")
        run = (None, source, None)
    return limits, main, run


def _setup_child(limits, out_w, err_w, st_w):
    os.dup2(st_w, 3)  # first: a setup failure is reported there
    os.setsid()  # own session + process group: a timeout kills the whole group
    # stdin is already /dev/null (see _prepare_stdio); sys.std* wrap fds 0-2 with empty buffers.
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    # Close everything else, above all the server's protocol pipes to the host.
    os.closerange(4, 1 << 16)
    if _UNSHARE_NET:
        # Fallback mode without bubblewrap: best-effort private network namespace (the
        # isolation label says whether it is permitted here). Root can do it directly; others
        # need a user namespace first.
        _unshare(_CLONE_NEWNET) or _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
    for res, pair in limits:
        try:
            resource.setrlimit(res, pair)
        except (ValueError, OSError):
            pass  # e.g. a hard limit already lower than ours: keep the stricter one
    if _UID is not None:
        os.setgroups([])
        os.setgid(_UID)
        os.setuid(_UID)  # from root to non-root: all capabilities are gone after this
    os.chdir(_WORKDIR)
    os.umask(0o077)


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _print_exc(exc):
    """Print a traceback the way `python prog.py` would: without the server's own frame."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is _run_program.__code__:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def _run_program(main, run):
    """Run the program: source code as the __main__ module, or a call of a function of a module
    already loaded (prelude or preload). Returns the exit code a `python prog.py` would."""
    sys.modules["__main__"] = main
    target, arg, module = run
    try:
        if module is not None:
            if target is None:
                raise ModuleNotFoundError(
                    f"Call: {module!r} is not a prelude or preloaded module of this sandbox, or lacks the function"
                )
            target(**arg)
        else:
            exec(compile(arg, "<program>", "exec", dont_inherit=True), main.__dict__)
        rc = 0
    except SystemExit as exc:
        if exc.code is None:
            rc = 0
        elif isinstance(exc.code, int):
            rc = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            rc = 1
    except MemoryError as exc:
        _print_exc(exc)
        os.write(3, _ST_MEMORY)
        rc = 1
    except BaseException as exc:
        _print_exc(exc)
        rc = 1
    try:  # what interpreter shutdown would do: atexit handlers, non-daemon threads
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        atexit._run_exitfuncs()
    except BaseException:
        pass
    return rc


def _child_main(plan, out_w, err_w, st_w):
    limits, main, run = plan
    try:
        _setup_child(limits, out_w, err_w, st_w)
    except BaseException as exc:
        try:
            os.write(3, _ST_SETUP + f"{type(exc).__name__}: {exc}".encode()[:500])
        finally:
            os._exit(125)
    rc = 1
    try:
        rc = _run_program(main, run)
    finally:
        _flush()
        os._exit(rc)


# ----------------------------------------------------------------------------- server side


def _proc_table():
    """pid -> (ppid, state) for every process visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2 :].split()
        table[int(name)] = (int(rest[1]), rest[0])
    return table


def _descendants(root):
    table = _proc_table()
    children = {}
    for pid, (ppid, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append((pid, table[pid][1]))
        todo.extend(children.get(pid, []))
    return out


def _reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False  # no children left at all
        if pid == 0:
            return True  # children remain, none exited


def _kill_leftovers(deadline_s=5.0):
    """SIGKILL every remaining descendant (they were re-parented to us, the subreaper)."""
    if not _reap_all():
        return 0  # fast path: the program left nothing behind
    me, killed, end = os.getpid(), 0, time.monotonic() + deadline_s
    while time.monotonic() < end:
        procs = _descendants(me)
        if not procs:
            return killed
        for pid, state in procs:
            if state != b"Z":
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
        _reap_all()
        time.sleep(0.001)
    return killed


def _workdir(cfg):
    return os.path.join(cfg["workdir_base"], "run")


def _make_workdir():
    """A fresh private working directory owned by the program's uid."""
    os.mkdir(_WORKDIR, 0o700)
    if _UID is not None:
        os.chown(_WORKDIR, _UID, _UID)


def _clean_workdir(cfg):
    """Remove everything the program wrote. Cheap when it wrote nothing (the common case);
    otherwise done by a child running as the program's uid, since the server has no
    DAC-override capability to descend into the program's private directories."""
    base, workdir, uid = cfg["workdir_base"], _WORKDIR, _UID
    try:
        os.rmdir(workdir)
        return
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            # Everything in the base, not just workdir: without bwrap and root the program
            # shares the server's uid and could have written next to its directory.
            for entry in os.listdir(base):
                if os.path.join(base, entry) == workdir:
                    os.chmod(workdir, 0o700)
                    for sub in os.listdir(workdir):
                        _rmtree(os.path.join(workdir, sub))
                else:
                    _rmtree(os.path.join(base, entry))
        except BaseException:
            code = 1
        os._exit(code)
    os.waitpid(pid, 0)
    try:
        os.rmdir(workdir)
    except FileNotFoundError:
        pass
    if os.listdir(base):
        raise RuntimeError(f"could not clean sandbox working directory {base}: {os.listdir(base)[:5]}")


def _rmtree(path):
    """Delete `path` and everything below it, however deep: one directory fd at a time, descending by
    name and climbing back by "..", so neither Python's recursion limit, nor PATH_MAX, nor the fd limit
    bounds it. A program that built a tree 3,000 directories deep made the recursive version fail, and
    its cleanup became a sandbox error instead of the program's own result."""
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    _owner_may_enter(path)
    fd, names = os.open(path, flags), []  # names: the way down, below `path`
    while True:
        down = None
        with os.scandir(fd) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    down = e.name
                    break
                os.unlink(e.name, dir_fd=fd)
        if down is not None:
            _owner_may_enter(down, fd)
            child = os.open(down, flags, dir_fd=fd)
            os.close(fd)
            fd = child
            names.append(down)
            continue
        if not names:  # `path` itself is empty now
            os.close(fd)
            os.rmdir(path)
            return
        parent = os.open("..", flags, dir_fd=fd)
        os.close(fd)
        os.rmdir(names.pop(), dir_fd=parent)
        fd = parent


def _owner_may_enter(name, dir_fd=None):
    """A directory the program made unreadable to itself (chmod 000) is opened after giving it back."""
    try:
        os.chmod(name, 0o700, dir_fd=dir_fd)
    except OSError:
        pass


class _Collector:
    """Reads a child's stdout/stderr/status pipes, keeping at most `limit` bytes per stream."""

    def __init__(self, out_r, err_r, st_r, limit):
        self.out_r, self.err_r, self.st_r = out_r, err_r, st_r
        self.bufs = {out_r: bytearray(), err_r: bytearray(), st_r: bytearray()}
        self.open = [out_r, err_r, st_r]
        self.limit = limit
        self.overflow = False

    def read(self, fd):
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self.open.remove(fd)
            os.close(fd)
            return
        buf = self.bufs[fd]
        room = (1024 if fd == self.st_r else self.limit) - len(buf)
        buf += chunk[: max(room, 0)]
        if len(chunk) > room and fd != self.st_r:
            self.overflow = True

    def pump(self, timeout):
        """Read what is ready within `timeout` seconds; False once every pipe hit EOF."""
        if not self.open:
            return False
        ready, _, _ = select.select(self.open, [], [], max(timeout, 0))
        for fd in ready:
            self.read(fd)
        return bool(self.open)

    def close(self):
        for fd in self.open:
            os.close(fd)
        self.open = []


def _execute(req, cfg):
    plan = _child_plan(req)  # first: a malformed request fails before anything is created
    timeout_s, max_output = float(req["timeout_s"]), int(req["max_output_bytes"])
    _make_workdir()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    st_r, st_w = os.pipe()
    # Prepared before the fork too: whatever the server first writes after it (while the child
    # still maps the same pages) costs a copy-on-write fault.
    io_ = _Collector(out_r, err_r, st_r, max_output)
    killed_for = None  # None | "timeout" | "output"
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child_main(plan, out_w, err_w, st_w)
    os.close(out_w)
    os.close(err_w)
    os.close(st_w)
    pidfd = os.pidfd_open(pid)
    deadline = t0 + timeout_s
    # Until the main child exits, the deadline passes, or it floods its output.
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            killed_for = "timeout"
            break
        ready, _, _ = select.select(io_.open + [pidfd], [], [], remaining)
        if pidfd in ready:
            break
        for fd in ready:
            io_.read(fd)
        if io_.overflow:
            killed_for = "output"
            break
    if killed_for:
        _kill_group(pid)
    _, wait_status = os.waitpid(pid, 0)
    duration = time.monotonic() - t0
    os.close(pidfd)
    # What the child wrote before it exited is in the pipes now; take it, then kill what it
    # left behind (a daemon would otherwise hold the pipes open), then read up to EOF.
    while io_.open and io_.pump(0):
        if not select.select(io_.open, [], [], 0)[0]:
            break
    leftovers = _kill_leftovers()
    end = time.monotonic() + 1.0
    while io_.pump(end - time.monotonic()) and time.monotonic() < end:
        pass
    io_.close()
    _clean_workdir(cfg)
    if io_.overflow and killed_for is None:
        killed_for = "output"
    return _result(
        wait_status, killed_for, bytes(io_.bufs[st_r]), io_.bufs[out_r], io_.bufs[err_r], duration, leftovers
    )


def _execute_safely(req, cfg):
    try:
        return _execute(req, cfg)
    except Exception as exc:
        return {
            "status": "error",
            "stderr": traceback.format_exc()[-2000:],
            "sandbox_error": f"server failure: {type(exc).__name__}: {exc}",
        }


def _kill_group(pid):
    for target in (-pid, pid):  # group first; the pid alone in case setsid() had not run yet
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass


def _result(wait_status, killed_for, status_bytes, out, err, duration, leftovers):
    sandbox_error = ""
    returncode = None
    if os.WIFEXITED(wait_status):
        returncode = os.WEXITSTATUS(wait_status)
    elif os.WIFSIGNALED(wait_status):
        returncode = -os.WTERMSIG(wait_status)
    if status_bytes.startswith(_ST_SETUP):
        status = "error"
        sandbox_error = "sandbox setup failed: " + status_bytes[1:].decode(errors="replace")
    elif killed_for == "timeout" or returncode == -signal.SIGXCPU:
        status = "timeout"
    elif killed_for == "output":
        status = "killed"
        err += b"\n[sandbox: output limit exceeded, program killed]"
    elif status_bytes.startswith(_ST_MEMORY):
        status = "memory"
    elif returncode is not None and returncode < 0:
        status = "killed"
    elif returncode == 0:
        status = "ok"
    else:
        status = "error"
    return {
        "status": status,
        "returncode": returncode,
        "stdout": out.decode("utf-8", errors="replace"),
        "stderr": err.decode("utf-8", errors="replace"),
        "duration_s": duration,
        "truncated": killed_for == "output",
        "leftover_processes": leftovers,
        "sandbox_error": sandbox_error,
    }


def _probe_unshare_net():
    """Whether a child may unshare its network namespace here (fallback mode only)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0 if (_unshare(_CLONE_NEWNET) or _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)) else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _prepare_stdio():
    """Move the host protocol off fds 0/1 and set up, once, what every child inherits: fds 0-2
    wrapped by fresh sys.std* objects (the server never writes through them, so their buffers
    stay empty), stdin on /dev/null, and the program's environment."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # a stray print in the server must not corrupt the protocol
    os.close(devnull)
    import io

    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    sys.argv = [""]
    workdir = _WORKDIR
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"})
    return proto_in, proto_out


_WARM_UP = """
import collections, re
class Point(collections.namedtuple("P", "x y")):
    def norm(self):
        return (self.x ** 2 + self.y ** 2) ** 0.5
def f(xs, *args, k=1, **kw):
    out = [x * k for x in xs if x % 2] + list({x: x for x in xs}) + [y for y in (lambda: xs)()]
    try:
        return sorted(out, key=lambda v: -v)[: len(xs) // 2], f"{xs!r:>5}", re.sub(r"\\d", "", "a1")
    except (ValueError, TypeError) as e:
        raise RuntimeError("x") from e
    finally:
        pass
assert f([1, 2, 3]) and Point(3, 4).norm() == 5.0
with open("/dev/null") as fh:
    fh.read()
"""


def _warm_up():
    """Exercise the compiler, exec and traceback formatting once before forking: their lazily
    initialised state would otherwise be rebuilt in every child (about 1.5 ms each)."""
    code = compile(_WARM_UP, "<warm-up>", "exec", dont_inherit=True)
    exec(code, {"__name__": "__warm_up__", "__builtins__": builtins})
    try:
        raise ValueError("warm-up")
    except ValueError as exc:
        traceback.format_exception(type(exc), exc, exc.__traceback__)
    json.loads(json.dumps({"a": [1, 2.5, "x", None]}))


def _load_prelude(modules):
    """Trusted modules (source given by the host) importable by every program without a file."""
    for name, source in modules.items():
        mod = types.ModuleType(name)
        exec(compile(source, f"<prelude {name}>", "exec", dont_inherit=True), mod.__dict__)
        sys.modules[name] = mod


# Set once by main(), read by every child.
_UID = None  # the throw-away uid programs run as (when the server may switch uids)
_WORKDIR = ""
_UNSHARE_NET = False


def main():
    global _UID, _WORKDIR, _UNSHARE_NET
    cfg = _recv(0)  # the host's first frame
    if cfg is None:
        raise SystemExit("sandbox server: no configuration on stdin")
    _UID, _WORKDIR, _UNSHARE_NET = cfg.get("uid"), _workdir(cfg), bool(cfg.get("unshare_net"))
    # Die with the host if it goes away (our parent is the host's long-lived spawner thread,
    # or bwrap, which itself dies with the host).
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if not _prctl(_PR_SET_CHILD_SUBREAPER, 1):
        raise SystemExit("sandbox server: PR_SET_CHILD_SUBREAPER failed")
    for name in cfg.get("preload", []):  # warm imports every forked program gets for free
        try:
            __import__(name)
        except ImportError:
            pass
    os.makedirs(cfg["workdir_base"], exist_ok=True)
    netns = bool(cfg.get("unshare_net")) and _probe_unshare_net()
    rfd, wfd = _prepare_stdio()
    _load_prelude(cfg.get("prelude", {}))
    _warm_up()
    import gc

    gc.collect()
    gc.freeze()  # keep the collector off the inherited heap in children (fewer copy-on-write faults)
    _send(wfd, {"ready": True, "pid": os.getpid(), "uid": os.getuid(), "netns": netns})
    while True:
        req = _recv(rfd)
        if req is None:  # host closed the pipe: shut down
            return
        _send(wfd, {"results": [_execute_safely(r, cfg) for r in req["batch"]]})


if __name__ == "__main__":
    main()
