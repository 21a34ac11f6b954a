"""The fork-server that runs inside each sandbox worker (stdlib only, no imports from pidistill).

The host starts it as `python -I -S -B -c <this file's source>` (inside bubblewrap when
available) and talks to it over stdin/stdout. A frame is a 4-byte big-endian length, then
UTF-8 JSON. The host's first frame is the configuration; after the server's
`{"ready": true, ...}` hello, the host streams programs, each a trusted header frame followed
by `body_len` raw bytes that only the program's own child ever reads:

    host -> server  {"kind": "code", "timeout_s": 2.0, "memory_mb": 512, ..., "body_len": N}  + N bytes of source
                    {"kind": "call", "function": "harness.run", ..., "body_len": N}  + N bytes of JSON kwargs
    server -> host  {"started": true}                      once the program's first byte is about to run
                    {"status": "ok", "returncode": 0, "out_len": A, "err_len": B, "program_ran": true, ...}
                    + A bytes of stdout + B bytes of stderr

One result per program, sent as soon as it finishes. A result with `"exit": true` is the server's
last: it could not go on safely (a child died before reading its whole body, so the stream is out
of sync; the program's files could not be removed; the server itself failed) and exits; the host
starts a fresh worker for the remaining programs.

Clean process per program. For each header the server forks a child, which: enters a fresh IPC
namespace (SysV shm, semaphores and message queues, POSIX message queues die with it; as root
with the CAP_SYS_ADMIN the server holds for this, otherwise inside a new user namespace; no IPC
namespace, no run), reads its body straight from the protocol pipe, drops privileges (new
session, rlimits, the throw-away uid when the server holds CAP_SETUID, private working directory,
clean environment), closes every fd but 0 (/dev/null), 1, 2 (its output pipes), 3 (its status
pipe) and 4 (see below), writes `R` on fd 3, waits for the server's go on fd 4 (sent once the
server has told the host `started`, so that a program that kills its server at once is still
known to have run), closes fd 4, and only then decodes and runs the program inside the
already-warm interpreter.

What a child can reach: its own memory, a copy of the server's as of the fork, which holds no
program's source, arguments or output: the server reads headers only, and moves each child's
stdout/stderr from the pipes into memfds (`splice`) and from there to the host (`sendfile`),
closing them before the next fork. Not the protocol pipes (closed), not the server's memory or fds
(as root: another uid; without root the server is non-dumpable, but the program can still kill
it), nothing the previous program left in the working directory, /dev/shm or IPC objects.

Status pipe: no `R` means the sandbox failed to set the child up (our error). After `R` the pipe
belongs to the program: `M` right after it means it died of MemoryError; anything else is ignored.
The server is a child subreaper, so every process a program leaves behind (daemons included) is
re-parented to it and killed before the result is sent; the working directory and /dev/shm are
then emptied (if that fails, the result says so in `damage` and the worker is replaced).
"""

import atexit
import builtins
import ctypes
import fcntl
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
_ST_READY = b"R"  # setup is done: every later byte (and any failure) is the program's
_ST_MEMORY = b"M"  # the program died of MemoryError
_ST_SETUP = b"S"  # the sandbox could not set the child up: an infrastructure failure

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWIPC = 0x08000000
_SYS_CLOSE_RANGE = 436  # the same number on x86_64 and aarch64 (the generic table)
_PROTO_FD_MIN = 10  # the host protocol pipes are moved here, clear of the child's fds 0-3
_SETUP_ERROR_MAX = 500


# ----------------------------------------------------------------------------- framing


def _read_exact(fd, n):
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


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


def _send_file(dst, src, n):
    """Copy the first `n` bytes of file `src` (a memfd) to `dst` in the kernel, never through our memory."""
    off = 0
    while off < n:
        sent = os.sendfile(dst, src, off, n - off)
        if sent <= 0:
            raise OSError(f"memfd shorter than expected ({off} of {n} bytes)")
        off += sent


# ----------------------------------------------------------------------------- libc helpers


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall  # resolved once here: a child only calls it
_syscall.restype = ctypes.c_long
_HAS_CLOSE_RANGE = os.uname().machine in ("x86_64", "aarch64")


def _prctl(option, arg):
    return _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) == 0


def _unshare(flags):
    return _libc.unshare(ctypes.c_int(flags)) == 0


def _close_fds_from(low):
    """Close every fd >= `low`, however high (close_range; the /proc listing where it is missing)."""
    if (
        _HAS_CLOSE_RANGE
        and _syscall(_SYS_CLOSE_RANGE, ctypes.c_uint(low), ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(0)) == 0
    ):
        return
    fds = [int(name) for name in os.listdir("/proc/self/fd")]
    os.closerange(low, max(fds) + 1)


# ----------------------------------------------------------------------------- child side


def _child_plan(req):
    """What the child needs, prepared by the server before the fork from the trusted header alone
    (never from the program's body). Whatever the child computes itself it computes on
    copy-on-write memory, where each object touched costs a page fault."""
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
        (resource.RLIMIT_MSGQUEUE, (0, 0)),  # no POSIX message queues: nothing outlives the program
    ]
    if req.get("nproc") is not None:
        limits.append((resource.RLIMIT_NPROC, (int(req["nproc"]),) * 2))
    main = types.ModuleType("__main__")  # a fresh __main__ per program
    main.__dict__["__builtins__"] = builtins
    body_len = int(req["body_len"])
    if body_len < 0:
        raise ValueError(f"negative body_len {body_len}")
    if req["kind"] == "call":
        module, _, name = req["function"].rpartition(".")
        target = getattr(sys.modules.get(module), name, None)  # trusted prelude code: resolved here
        run = (target, module)
    elif req["kind"] == "code":
        run = (None, None)
    else:
        raise ValueError(f"unknown program kind {req['kind']!r}")
    return limits, main, run, body_len


def _new_namespaces():
    """A fresh IPC namespace (and, in the fallback mode, network namespace) for this program alone.
    As root the server keeps the IPC namespace clean itself (`_fresh_ipc`: a new one only after a
    program left SysV objects, which saves ~0.25 ms per program), so only the fallback's network
    namespace is made here. Without root a user namespace is needed first. The network namespace
    is best effort (the isolation label says whether it works here); the IPC namespace is not:
    without it the program does not run."""
    if not _SHARED_UID:
        if _UNSHARE_NET:
            _unshare(_CLONE_NEWNET)
        return
    flags = _CLONE_NEWIPC | (_CLONE_NEWNET if _UNSHARE_NET else 0)
    if _unshare(flags) or _unshare(_CLONE_NEWUSER | flags):
        return
    if flags != _CLONE_NEWIPC and (_unshare(_CLONE_NEWIPC) or _unshare(_CLONE_NEWUSER | _CLONE_NEWIPC)):
        return
    err = ctypes.get_errno()
    raise OSError(err, f"cannot give the program a private IPC namespace: {os.strerror(err)}")


_SYSVIPC = ("/proc/sysvipc/shm", "/proc/sysvipc/sem", "/proc/sysvipc/msg")


def _fresh_ipc(first=False):
    """(Root.) Give the next programs an IPC namespace with nothing in it: a new one when the last
    program left SysV shared memory, semaphores or message queues (each /proc/sysvipc file is a
    header line plus one line per object; the old namespace and its objects die with the program's
    last process). POSIX message queues need no check: programs may not create any
    (RLIMIT_MSGQUEUE 0). False when a new namespace is needed and cannot be made."""
    if not first:
        for path in _SYSVIPC:
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    text = os.read(fd, 4096)
                finally:
                    os.close(fd)
            except OSError:
                break  # cannot tell: make a new one
            if text.count(b"\n") > 1:
                break
        else:
            return True
    return _unshare(_CLONE_NEWIPC)


def _setup_child(limits, rfd, body_len, out_w, err_w, st_w, go_r):
    """Everything before the program's first byte; returns its body, read from the host's pipe."""
    os.dup2(st_w, 3)  # first: a setup failure is reported there (3 held /dev/null, see _prepare_stdio)
    os.setsid()  # own session + process group: a timeout kills the whole group
    # stdin is already /dev/null (see _prepare_stdio); sys.std* wrap fds 0-2 with empty buffers.
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    _new_namespaces()
    # The body before the memory limit: a program too large for it fails as the program (when it
    # is compiled), not as a setup failure.
    body = _read_exact(rfd, body_len)
    if body is None:
        raise EOFError(f"the host's request ended before its {body_len}-byte body")
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
    # Everything else goes, above all the server's protocol pipes to the host and its memfds;
    # fd 4 waits for the server's go (see _child_main) and is closed before the program runs.
    if _SHARED_UID:
        os.dup2(go_r, 4)
    _close_fds_from(5 if _SHARED_UID else 4)
    return body


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


def _run_program(main, run, body):
    """Run the program: source code as the __main__ module, or a call of a function of a module
    already loaded (prelude or preload) with the JSON arguments of its body. Returns the exit code
    a `python prog.py` would."""
    sys.modules["__main__"] = main
    target, module = run
    try:
        if module is not None:
            kwargs = json.loads(body)
            del body
            if target is None:
                raise ModuleNotFoundError(
                    f"Call: {module!r} is not a prelude or preloaded module of this sandbox, or lacks the function"
                )
            target(**kwargs)
        else:
            source = body.decode("utf-8", "surrogatepass")
            del body
            # Let tracebacks show the program's source lines.
            linecache.cache["<program>"] = (len(source), None, source.splitlines(True), "<program>")
            exec(compile(source, "<program>", "exec", dont_inherit=True), main.__dict__)
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
        try:
            os.write(3, _ST_MEMORY)
        except OSError:
            pass
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


def _child_main(plan, rfd, out_w, err_w, st_w, go_r):
    limits, main, run, body_len = plan
    try:
        body = _setup_child(limits, rfd, body_len, out_w, err_w, st_w, go_r)
        os.write(3, _ST_READY)  # the last thing before the program: from here on, all is the program's
    except BaseException as exc:
        try:
            os.write(3, _ST_SETUP + f"{type(exc).__name__}: {exc}".encode()[:_SETUP_ERROR_MAX])
        finally:
            os._exit(125)
    # Wait until the server has told the host that the program starts: a program that kills its
    # server at once must be seen as having run (its own failure), not as a sandbox failure. Only
    # a program that shares the server's uid can kill it: with a uid of its own (root mode) the
    # handshake, two wake-ups of three processes per program, is skipped.
    if _SHARED_UID:
        try:
            go = os.read(4, 1)
            os.close(4)
        except OSError:
            go = b""
        if not go:  # the server is gone: the program does not run
            os._exit(125)
    rc = 1
    try:
        rc = _run_program(main, run, body)
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
    """Remove everything the program wrote: its directory, and in bubblewrap mode the worker's
    /dev/shm. Cheap when it wrote nothing (the common case); otherwise done by a child running as
    the program's uid, since the server has no DAC-override capability to descend into the
    program's private directories."""
    base, workdir, uid, shm = cfg["workdir_base"], _WORKDIR, _UID, cfg.get("shm_dir")
    try:
        os.rmdir(workdir)
        # Without root the program shares the server's uid and could have written next to its
        # directory; with root it cannot (the base is the server's, mode 0755).
        if (uid is not None or not os.listdir(base)) and not (shm and os.listdir(shm)):
            return
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _close_fds_from(3)  # nothing of the server's for a process of the program's uid
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            for entry in os.listdir(base):
                if os.path.join(base, entry) == workdir:
                    os.chmod(workdir, 0o700)
                    for sub in os.listdir(workdir):
                        _rmtree(os.path.join(workdir, sub))
                else:
                    _rmtree(os.path.join(base, entry))
            for entry in os.listdir(shm) if shm else ():
                _rmtree(os.path.join(shm, entry))
        except BaseException:
            code = 1
        os._exit(code)
    os.waitpid(pid, 0)
    try:
        os.rmdir(workdir)
    except FileNotFoundError:
        pass
    left = os.listdir(base) + (os.listdir(shm) if shm else [])
    if left:
        raise RuntimeError(f"could not clean the program's files: {left[:5]}")


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
    """Moves a child's stdout/stderr from their pipes into memfds in the kernel (`splice`: the bytes
    never enter this process's memory), at most `limit` bytes each (one more marks an overflow),
    and reads the few status bytes the server needs from the status pipe (`R`, `M`, or `S` and a
    setup error); further status bytes are discarded unread."""

    def __init__(self, out_r, err_r, st_r, out_m, err_m, limit):
        self.st_r = st_r
        self.sinks = {out_r: out_m, err_r: err_m}
        self.counts = {out_r: 0, err_r: 0}
        self.status = b""
        self.open = [out_r, err_r, st_r]
        self.limit = limit
        self.overflow = False

    def read(self, fd):
        if fd == self.st_r:
            n = self._read_status()
        elif self.counts[fd] > self.limit:
            n = os.splice(fd, _DEVNULL, 1 << 16)  # only reached while closing down after an overflow
        else:
            n = os.splice(fd, self.sinks[fd], self.limit + 1 - self.counts[fd])
            self.counts[fd] += n
            if self.counts[fd] > self.limit:
                self.overflow = True
        if not n:
            self.open.remove(fd)
            os.close(fd)

    def _read_status(self):
        keep = 2 if self.status[:1] == _ST_READY else 1 + _SETUP_ERROR_MAX
        if len(self.status) >= keep:
            return os.splice(self.st_r, _DEVNULL, 1 << 16)
        chunk = os.read(self.st_r, keep - len(self.status))
        self.status += chunk
        return len(chunk)

    @property
    def started(self):
        return self.status[:1] == _ST_READY

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


def _execute(req, cfg, rfd, wfd):
    """Run one program; returns its result header and the memfds holding its stdout and stderr."""
    plan = _child_plan(req)  # first: a malformed request fails before anything is created
    timeout_s, max_output = float(req["timeout_s"]), int(req["max_output_bytes"])
    _make_workdir()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    st_r, st_w = os.pipe()
    # The server may read the status pipe only after the child is gone (below): a program writing
    # more than it holds gets a short write, not a block (it can undo this, and then waits for its
    # own timeout).
    os.set_blocking(st_w, False)
    go_r, go_w = os.pipe() if _SHARED_UID else (-1, -1)
    out_m, err_m = os.memfd_create("stdout", os.MFD_CLOEXEC), os.memfd_create("stderr", os.MFD_CLOEXEC)
    # Prepared before the fork too: whatever the server first writes after it (while the child
    # still maps the same pages) costs a copy-on-write fault.
    io_ = _Collector(out_r, err_r, st_r, out_m, err_m, max_output)
    killed_for = None  # None | "timeout" | "output" | "setup"
    announced = False
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child_main(plan, rfd, out_w, err_w, st_w, go_r)
    for fd in (out_w, err_w, st_w, go_r):
        if fd >= 0:
            os.close(fd)
    pidfd = os.pidfd_open(pid)
    deadline = t0 + timeout_s  # for the setup first, then (shared uid) for the program from its `R` on
    # Until the main child exits, the deadline passes, or it floods its output. With a uid of its own
    # the program cannot harm the server, which then reads the status pipe only once the child is
    # gone: one wake-up less per program (its `R` would wake the server for nothing).
    watch_status = _SHARED_UID
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if not watch_status and st_r in io_.open and select.select([st_r], [], [], 0)[0]:
                io_.read(st_r)
            killed_for = "timeout" if io_.started else "setup"
            break
        watched = io_.open if watch_status else [fd for fd in io_.open if fd != st_r]
        ready, _, _ = select.select(watched + [pidfd], [], [], remaining)
        if pidfd in ready:
            break
        for fd in ready:
            io_.read(fd)
        if io_.started and not announced:
            announced = True
            deadline = time.monotonic() + timeout_s
            _send(wfd, {"started": True})  # the host now knows a failure from here on is the program's
            os.write(go_w, b"G")  # and only now may the program run
            os.close(go_w)
            go_w = -1
        if io_.overflow:
            killed_for = "output"
            break
    if go_w >= 0:
        os.close(go_w)
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
    damage = ""
    try:
        _clean_workdir(cfg)
    except Exception as exc:  # the program's doing: its result says so, and this worker is replaced
        damage = f"left files the sandbox could not remove ({type(exc).__name__}: {exc})"
    if not _SHARED_UID and not _fresh_ipc():
        damage = damage or "left IPC objects the sandbox could not discard"
    if io_.overflow and killed_for is None:
        killed_for = "output"
    out_len, err_len = min(io_.counts[out_r], max_output), min(io_.counts[err_r], max_output)
    if killed_for == "output":
        note = b"\n[sandbox: output limit exceeded, program killed]"
        os.pwrite(err_m, note, err_len)
        err_len += len(note)
    head = _result(wait_status, killed_for, io_.status, duration, leftovers)
    head.update(out_len=out_len, err_len=err_len, damage=damage)
    if damage or not io_.started:
        # Files we cannot remove stay in this worker's tmpfs; a child that did not get to `R` may
        # not have read all of its body, and then the request stream is out of sync. Either way
        # this server stops after this result and the host starts a fresh worker.
        head["exit"] = True
    return head, out_m, err_m


def _kill_group(pid):
    for target in (-pid, pid):  # group first; the pid alone in case setsid() had not run yet
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass


def _result(wait_status, killed_for, status_bytes, duration, leftovers):
    sandbox_error = ""
    returncode = None
    if os.WIFEXITED(wait_status):
        returncode = os.WEXITSTATUS(wait_status)
    elif os.WIFSIGNALED(wait_status):
        returncode = -os.WTERMSIG(wait_status)
    program_ran = status_bytes[:1] == _ST_READY
    if not program_ran:
        status = "error"
        if status_bytes[:1] == _ST_SETUP:
            why = status_bytes[1:].decode(errors="replace")
        elif killed_for == "setup":
            why = "timed out before the program could start"
        else:
            why = f"the child ended before the program started (wait status {wait_status})"
        sandbox_error = "sandbox setup failed: " + why
    elif killed_for == "timeout" or returncode == -signal.SIGXCPU:
        status = "timeout"
    elif killed_for == "output":
        status = "killed"
    elif status_bytes[1:2] == _ST_MEMORY:
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
        "duration_s": duration,
        "truncated": killed_for == "output",
        "leftover_processes": leftovers,
        "sandbox_error": sandbox_error,
        "program_ran": program_ran,
    }


def _probe_namespaces():
    """Whether a child may unshare its IPC namespace here (required: the worker does not start
    without it) and, in fallback mode, its network namespace (best effort; returned)."""
    netns_before = os.stat("/proc/self/ns/net").st_ino
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            _new_namespaces()
            code = 0 if os.stat("/proc/self/ns/net").st_ino != netns_before else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 2
    if code == 2:
        raise SystemExit("sandbox server: cannot give programs a private IPC namespace here")
    return code == 0


def _prepare_stdio():
    """Move the host protocol off fds 0/1 (to fds >= 10) and set up, once, what every child
    inherits: fds 0-2 wrapped by fresh sys.std* objects (the server never writes through them, so
    their buffers stay empty), stdin on /dev/null, fd 3 held by /dev/null (so that no pipe of the
    server lands on 3 and the child's dup2 onto 3 clobbers nothing it needs), and the program's
    environment."""
    proto_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, _PROTO_FD_MIN)
    proto_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, _PROTO_FD_MIN)
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 3):
        if devnull != fd:
            os.dup2(devnull, fd, inheritable=fd != 3)  # a stray print in the server must not corrupt the protocol
    if devnull > 3:
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
_SHARED_UID = True  # _UID is None: programs run as the server's own uid (no root), so they could kill it
_DEVNULL = -1  # where surplus status and output bytes are spliced to, unread


def _serve_one(req, cfg, rfd, wfd, pending):
    """Run one program and queue its result; send the queue when the host has no further program
    waiting (or the queue is full, or this server must stop). Sending results in groups spares the
    host a wake-up per program; they wait in memfds, which every child closes before its program
    runs. Where programs share our uid the result goes at once (the host pairs a `started` message
    with the program after the last result). False when the server must stop after it."""
    out_m = err_m = -1
    try:
        head, out_m, err_m = _execute(req, cfg, rfd, wfd)
    except Exception as exc:  # our bug or a broken environment: the host retries on a fresh worker
        head = {
            "status": "error",
            "sandbox_error": f"server failure: {type(exc).__name__}: {exc}",
            "exit": True,  # the program's body may be unread: the stream is out of sync
            "server_trace": traceback.format_exc()[-2000:],
        }
    pending.append((head, out_m, err_m))
    if _SHARED_UID or head.get("exit") or len(pending) >= _MAX_PENDING or not select.select([rfd], [], [], 0)[0]:
        _flush_results(wfd, pending)
    return not head.get("exit")


_MAX_PENDING = 16  # results held back at most (each holds two memfds)


def _flush_results(wfd, pending):
    try:
        for head, out_m, err_m in pending:
            _send(wfd, head)
            _send_file(wfd, out_m, head.get("out_len", 0))
            _send_file(wfd, err_m, head.get("err_len", 0))
    finally:
        for _, out_m, err_m in pending:
            for fd in (out_m, err_m):
                if fd >= 0:
                    os.close(fd)
        del pending[:]


def main():
    global _UID, _WORKDIR, _UNSHARE_NET, _DEVNULL, _SHARED_UID
    cfg = _recv(0)  # the host's first frame
    if cfg is None:
        raise SystemExit("sandbox server: no configuration on stdin")
    _UID, _WORKDIR, _UNSHARE_NET = cfg.get("uid"), _workdir(cfg), bool(cfg.get("unshare_net"))
    _SHARED_UID = _UID is None
    # Die with the host if it goes away (our parent is the host's long-lived spawner thread,
    # or bwrap, which itself dies with the host).
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if not _prctl(_PR_SET_CHILD_SUBREAPER, 1):
        raise SystemExit("sandbox server: PR_SET_CHILD_SUBREAPER failed")
    # Defence in depth where programs share our uid (no root): no /proc/<server>/mem or fd/ for them.
    _prctl(_PR_SET_DUMPABLE, 0)
    for name in cfg.get("preload", []):  # warm imports every forked program gets for free
        try:
            __import__(name)
        except ImportError:
            pass
    os.makedirs(cfg["workdir_base"], exist_ok=True)
    if not _SHARED_UID and not _fresh_ipc(first=True):  # never the host's (rlimits mode) nor bwrap's
        raise SystemExit("sandbox server: cannot give programs a private IPC namespace here")
    netns = _probe_namespaces()
    rfd, wfd = _prepare_stdio()
    _DEVNULL = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
    _load_prelude(cfg.get("prelude", {}))
    _warm_up()
    # Resolve the libc symbol and ctypes call path of close_range here, once (it closes nothing up
    # there): otherwise every child binds it lazily itself, paying page faults for the server's work.
    _close_fds_from(1 << 20)
    import gc

    gc.collect()
    gc.freeze()  # keep the collector off the inherited heap in children (fewer copy-on-write faults)
    _send(wfd, {"ready": True, "pid": os.getpid(), "uid": os.getuid(), "netns": netns})
    pending = []
    try:
        while True:
            req = _recv(rfd)  # a header only: the body stays in the pipe for the program's child
            if req is None:  # host closed the pipe: shut down
                return
            try:
                if not _serve_one(req, cfg, rfd, wfd, pending):
                    return
            except OSError:  # the host is gone
                return
    finally:
        _kill_leftovers(1.0)


if __name__ == "__main__":
    main()
