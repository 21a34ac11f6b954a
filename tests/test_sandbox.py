"""The sandbox contains hostile programs, enforces its limits, runs fast, and leaks nothing.

Adversarial programs run in bubblewrap mode (skipped where bubblewrap cannot run); a few
checks also cover the rlimits-only fallback.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from sandbox import Call, ExecResult, Limits, Sandbox, SandboxError, bwrap_available
from sandbox.core import _UID_BASE, _interpreter, _python_roots, _unreadable_to_others

needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap not available (apt-get install bubblewrap)")

SECRET_NAME = "PIDISTILL_FAKE_SECRET"
SECRET_VALUE = "sk-fake-" + uuid.uuid4().hex


def sandbox_processes() -> list[psutil.Process]:
    """Processes on the host running as a throw-away uid of this test process's sandboxes (there must
    be none between runs; those of sandboxes of other processes on the machine are theirs)."""
    ours = _UID_BASE + ((os.getpid() & 0x3FFFFF) << 6)
    out = []
    for p in psutil.process_iter(["uids"]):
        try:
            if p.info["uids"] and ours <= p.info["uids"].real < ours + 64:
                out.append(p)
        except psutil.Error:
            pass
    return out


def worker_tree(sb: Sandbox) -> dict[int, list[int]]:
    """worker (bwrap) pid -> pids of every process below it."""
    tree = {}
    for slot in sb._all_slots:
        if slot.worker is not None:
            root = psutil.Process(slot.worker.proc.pid)
            tree[root.pid] = [c.pid for c in root.children(recursive=True)]
    return tree


@pytest.fixture(scope="module")
def sb():
    os.environ[SECRET_NAME] = SECRET_VALUE  # set before the workers start: they must not see it
    with Sandbox(Limits(timeout_s=2.0, memory_mb=512, max_output_bytes=64 * 1024), workers=2, isolation="bwrap") as box:
        yield box
    os.environ.pop(SECRET_NAME, None)


# ----------------------------------------------------------------------------- basics


@needs_bwrap
def test_runs_a_program_and_reports_isolation(sb):
    r = sb.run("print(1)")
    assert isinstance(r, ExecResult)
    assert (r.status, r.returncode, r.stdout, r.stderr) == ("ok", 0, "1\n", "")
    assert r.isolation == "bwrap" and sb.isolation == "bwrap"
    assert 0 < r.duration_s < 1


@needs_bwrap
@pytest.mark.parametrize(
    "code, status, detail",
    [
        pytest.param("raise ValueError('boom')", "error", lambda r: "ValueError: boom" in r.stderr, id="raises"),
        pytest.param("import sys; sys.exit(3)", "error", lambda r: r.returncode == 3, id="exit-code"),
        pytest.param("x = bytearray(10 * 2**30)", "memory", lambda r: "MemoryError" in r.stderr, id="memory-hog"),
        pytest.param("while True: pass", "timeout", lambda r: 1.9 < r.duration_s < 3.0, id="infinite-loop"),
        pytest.param(
            "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
            "killed",
            lambda r: r.returncode == -11,
            id="segfault",
        ),
        pytest.param("def f(:\n  pass", "error", lambda r: "SyntaxError" in r.stderr, id="syntax-error"),
    ],
)
def test_statuses(sb, code, status, detail):
    r = sb.run(code)
    shown = (r.status, r.returncode, r.duration_s, r.stderr[-500:])
    assert r.status == status, shown
    assert detail(r), shown
    assert not r.sandbox_error


@needs_bwrap
def test_text_and_stdin(sb):
    r = sb.run("print('h\u00e9llo \u2713', flush=True); import sys; sys.stdout.buffer.write(b'\\xff\\n')")
    assert r.stdout == "h\u00e9llo \u2713\n\ufffd\n"
    r = sb.run("input()")
    assert r.status == "error" and "EOFError" in r.stderr  # stdin is /dev/null
    big = "x = 1\n" * 100_000 + "print(x)"  # 600 kB of source
    assert sb.run(big).stdout == "1\n"


@needs_bwrap
def test_a_dead_worker_is_replaced():
    with Sandbox(Limits(timeout_s=2.0), workers=1, isolation="bwrap") as box:
        assert box.run("print(1)").stdout == "1\n"
        old = box._all_slots[0].worker.proc
        old.kill()  # the container dies with its bwrap process
        old.wait()
        r = box.run("print(2)")
        assert (r.status, r.stdout, r.sandbox_error) == ("ok", "2\n", "")
        assert box._all_slots[0].worker.proc.pid != old.pid


@needs_bwrap
def test_run_many_keeps_order_and_is_parallel(sb):
    n = 200
    t0 = time.perf_counter()
    results = sb.run_many([f"print({i} * {i})" for i in range(n)])
    elapsed = time.perf_counter() - t0
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(n)]
    # two programs that each sleep 1 s finish together on two workers
    t0 = time.perf_counter()
    assert [r.status for r in sb.run_many(["import time; time.sleep(1)"] * 2)] == ["ok", "ok"]
    assert time.perf_counter() - t0 < 1.8
    assert elapsed < 10  # ~2-5 ms each; generous for a loaded 2-core machine


@needs_bwrap
def test_per_call_limits(sb):
    r = sb.run("import time; time.sleep(0.5); print('done')", limits=Limits(timeout_s=0.2))
    assert r.status == "timeout" and r.stdout == ""
    r = sb.run("x = bytearray(300 * 2**20); print(len(x))", limits=Limits(memory_mb=1024))
    assert r.status == "ok"


@needs_bwrap
def test_programs_do_not_see_each_other(sb):
    first = sb.run("open('note.txt', 'w').write('hello'); import os; print(os.getcwd())")
    assert first.status == "ok"
    later = sb.run_many(
        [f"import os; print(sorted(os.listdir('.')), os.path.exists({first.stdout.strip()!r} + '/note.txt'))"] * 4
    )
    assert {r.stdout for r in later} == {"[] False\n"}


# ----------------------------------------------------------------------------- adversarial programs

FORK_BOMB = """
import hashlib
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""

DAEMON = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(300)
    os._exit(0)
print("parent done")
"""

# A process name a test can look for (prctl: /proc/self/comm is root's in a non-dumpable process).
SET_NAME = "import ctypes; ctypes.CDLL(None).prctl(15, b'{}', 0, 0, 0)"

SOCKETS = """
import socket
for host, port in [("127.0.0.1", HOST_PORT), ("127.0.0.1", 22), ("1.1.1.1", 53)]:
    s = socket.socket()
    s.settimeout(1.0)
    try:
        s.connect((host, port))
        print("CONNECTED", host)
    except OSError as e:
        print("blocked", host, type(e).__name__)
    finally:
        s.close()
"""


@dataclass(frozen=True)
class Host:
    """What lies outside the sandbox for a hostile program to reach."""

    secret_file: Path  # world-readable, outside /usr and /etc: still invisible inside
    escape_targets: tuple[Path, ...]  # where a program must not be able to write
    port: int  # a service listening on the host's loopback


@pytest.fixture
def host(tmp_path):
    secret_file = tmp_path / "host_secret.txt"
    secret_file.write_text("top secret")
    os.chmod(tmp_path, 0o755)
    secret_file.chmod(0o644)  # even world-readable host files outside /usr, /etc are invisible
    escape_targets = (
        Path("/tmp") / f"pidistill-escape-{uuid.uuid4().hex}",
        Path.cwd() / f"escape-{uuid.uuid4().hex}",
        tmp_path / "written.txt",
        Path("/usr") / f"escape-{uuid.uuid4().hex}",
    )
    with socket.create_server(("127.0.0.1", 0)) as listener:  # a host service the sandbox must not reach
        yield Host(secret_file, escape_targets, listener.getsockname()[1])


def write_outside(host: Host) -> str:
    return "\n".join(
        f"try:\n    open({str(p)!r}, 'w').write('x'); print('WROTE {p}')\nexcept OSError as e:\n    print('denied', type(e).__name__)"
        for p in host.escape_targets
    )


def read_outside(host: Host) -> str:
    return f"""
for path in [{str(host.secret_file)!r}, '/root/.bashrc', '/etc/shadow', {str(Path.cwd() / "pyproject.toml")!r}]:
    try:
        print('READ', path, open(path).read()[:20])
    except OSError as e:
        print('denied', type(e).__name__)
"""


@dataclass(frozen=True)
class Attack:
    """A hostile program (text, or made from what the host offers), the statuses it may end with,
    and what else must hold of its result."""

    program: str | Callable[[Host], str]
    statuses: tuple[str, ...]
    checks: tuple[Callable[[ExecResult, Host], bool], ...] = ()


ATTACKS = [
    pytest.param(Attack(FORK_BOMB, ("timeout", "error")), id="fork-bomb"),
    pytest.param(Attack("while True: pass", ("timeout",)), id="infinite-loop"),
    pytest.param(Attack("x = bytearray(10 * 2**30)\nprint(len(x))", ("memory",)), id="memory-hog-bytearray"),
    pytest.param(Attack("x = [0] * (2 * 10**9)", ("memory",)), id="memory-hog-list"),
    pytest.param(
        Attack(
            lambda host: SOCKETS.replace("HOST_PORT", str(host.port)),
            ("ok",),
            (lambda r, host: "CONNECTED" not in r.stdout and r.stdout.count("blocked") == 3,),
        ),
        id="network",
    ),
    pytest.param(
        Attack(
            write_outside,
            ("ok",),
            (
                lambda r, host: "WROTE" not in r.stdout and r.stdout.count("denied") == 4,
                lambda r, host: not any(p.exists() for p in host.escape_targets),
            ),
        ),
        id="write-outside-temp-dir",
    ),
    pytest.param(
        Attack(read_outside, ("ok",), (lambda r, host: "READ" not in r.stdout and "top secret" not in r.stdout,)),
        id="read-host-files",
    ),
    pytest.param(
        Attack(
            f"import os; print(sorted(os.environ)); print({SECRET_NAME!r} in os.environ)",
            ("ok",),
            (
                lambda r, host: SECRET_VALUE not in r.stdout and r.stdout.endswith("False\n"),
                lambda r, host: r.stdout.startswith("['HOME', 'LANG', 'PATH', 'TMPDIR']"),
            ),
        ),
        id="env-secrets",
    ),
    pytest.param(
        Attack(
            "import os\nos.kill(os.getppid(), 9)\nos.kill(1, 9)",
            ("error",),
            (lambda r, host: "PermissionError" in r.stderr,),
        ),
        id="kill-parent",
    ),
    pytest.param(
        Attack(
            "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)",
            ("killed",),
            (lambda r, host: r.truncated and len(r.stdout) <= 64 * 1024,),
        ),
        id="print-1gb",
    ),
    pytest.param(Attack(DAEMON, ("ok",), (lambda r, host: r.stdout == "parent done\n",)), id="daemon"),
    pytest.param(
        Attack(
            "chunk = b'x' * (1 << 20)\ni = 0\nwhile True:\n    open(f'f{i}', 'wb').write(chunk * 8); i += 1",
            ("error",),
            (lambda r, host: "No space left" in r.stderr,),
        ),
        id="fill-temp-dir",
    ),
]


@needs_bwrap
@pytest.mark.slow
@pytest.mark.parametrize("attack", ATTACKS)
def test_hostile_program_is_contained(sb, host, attack):
    before = worker_tree(sb) or None
    program = attack.program(host) if callable(attack.program) else attack.program
    r, neighbour = sb.run_many([program, "print('neighbour')"])  # on the other worker, at the same time
    shown = (r.status, r.returncode, r.stdout[-300:], r.stderr[-300:])
    assert r.status in attack.statuses, shown
    for check in attack.checks:
        assert check(r, host), shown
    assert not r.sandbox_error and not neighbour.sandbox_error
    assert (neighbour.status, neighbour.stdout) == ("ok", "neighbour\n")

    # Nothing survives: no process runs as a sandbox uid, and each worker is back to exactly
    # its bwrap monitor, bwrap init and fork-server (the same processes as before).
    assert sandbox_processes() == []
    after = worker_tree(sb)
    assert all(len(children) == 2 for children in after.values()), after
    if before:
        assert set(before) <= set(after)
    # ... and the sandbox still works normally afterwards
    assert [r.stdout for r in sb.run_many(["print('still fine')"] * 4)] == ["still fine\n"] * 4


@needs_bwrap
def test_daemon_is_gone_when_result_returns(sb):
    r = sb.run(DAEMON.replace("time.sleep(300)", SET_NAME.format("pidistill-dmn") + "; time.sleep(300)"))
    assert r.status == "ok"
    assert sandbox_processes() == []
    assert not [p for p in psutil.process_iter(["name"]) if p.info["name"] == "pidistill-dmn"]


@needs_bwrap
def test_timeout_kills_the_whole_process_group(sb):
    code = "import os, time\nfor _ in range(5):\n    if os.fork() == 0:\n        break\ntime.sleep(60)"
    r = sb.run(code, limits=Limits(timeout_s=0.5))
    assert r.status == "timeout" and r.duration_s < 2
    assert sandbox_processes() == []


# ----------------------------------------------------------------------------- lifecycle


@needs_bwrap
def test_close_leaves_no_process_and_rejects_runs():
    with Sandbox(Limits(timeout_s=2.0), workers=2, isolation="bwrap") as box:
        box.run_many(["print(1)"] * 4)
        tree = worker_tree(box)
        assert len(tree) == 2
        pids = [p for root, kids in tree.items() for p in (root, *kids)]

    def alive(pid: int) -> bool:  # a zombie is not running (bwrap's pid 1 is reaped by the host's init)
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.time() + 5
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.02)
    assert not any(alive(p) for p in pids)
    with pytest.raises(SandboxError, match="closed"):
        box.run("print(1)")


@needs_bwrap
def test_usable_from_short_lived_threads():
    """Workers must not die when the thread that first used them exits (PR_SET_PDEATHSIG is per thread)."""
    with Sandbox(Limits(timeout_s=2.0), workers=2, isolation="bwrap") as box:
        out: list[ExecResult] = []
        t = threading.Thread(target=lambda: out.append(box.run("print('from a thread')")))
        t.start()
        t.join()
        pid_before = sorted(worker_tree(box))
        time.sleep(0.2)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: box.run(f"print({i})"), range(20)))
        assert out[0].stdout == "from a thread\n"
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
        assert set(pid_before) <= set(worker_tree(box))  # the first worker was not restarted


HELPERS = """
import sys
def greet(name, times=1):
    print(("hello " + name + " ") * times)
def fail(msg):
    raise ValueError(msg)
def leave(code):
    sys.exit(code)
def loop():
    while True:
        pass
"""


@needs_bwrap
def test_call_runs_a_prelude_function_as_a_program():
    """A Call is a program like any other (same isolation, statuses, limits), without source."""
    with Sandbox(Limits(timeout_s=1.0), workers=1, isolation="bwrap", prelude={"helpers": HELPERS}) as box:
        ok, raised, exited, looped, missing, stdlib, source = box.run_many(
            [
                Call("helpers.greet", {"name": "you", "times": 2}),
                Call("helpers.fail", {"msg": "no"}),
                Call("helpers.leave", {"code": 3}),
                Call("helpers.loop"),
                Call("nothere.f"),
                Call("json.dumps", {"obj": [1]}),
                "import helpers; helpers.greet('src')",
            ]
        )
        assert (ok.status, ok.stdout, ok.isolation) == ("ok", "hello you hello you \n", "bwrap")
        assert raised.status == "error" and raised.stderr.rstrip().endswith("ValueError: no")
        assert "in fail" in raised.stderr and "_server" not in raised.stderr  # the program's frames only
        assert (exited.status, exited.returncode) == ("error", 3)
        assert looped.status == "timeout"
        assert missing.status == "error" and "'nothere' is not a prelude or preloaded module" in missing.stderr
        assert stdlib.status == "ok"
        assert source.stdout == "hello src \n"
        # the arguments of one call are not seen by the next
        first, second = box.run_many([Call("helpers.greet", {"name": "a"}), Call("helpers.greet", {"name": "b"})])
        assert (first.stdout, second.stdout) == ("hello a \n", "hello b \n")
    with pytest.raises(ValueError, match="module.function"):
        Call("greet")
    # the configuration travels on the worker's stdin: a prelude larger than an argv string may be
    big = {"big": "DATA = " + repr("x" * 300_000)}
    with Sandbox(Limits(timeout_s=2.0), workers=1, isolation="bwrap", prelude=big) as box:
        assert box.run("import big; print(len(big.DATA))").stdout == "300000\n"
    with Sandbox(workers=1) as box, pytest.raises(TypeError, match="sandbox.Call"):
        box.run(b"print(1)")  # type: ignore[arg-type]


@needs_bwrap
def test_start_boots_workers_in_the_background(monkeypatch):
    import sandbox.core

    release = threading.Event()
    real_worker = sandbox.core._Worker

    def held_worker(*args, **kwargs):  # a worker start that waits for the test's signal
        assert release.wait(30)
        return real_worker(*args, **kwargs)

    monkeypatch.setattr(sandbox.core, "_Worker", held_worker)
    with Sandbox(Limits(timeout_s=2.0), workers=2, isolation="bwrap") as box:
        box.start()  # returns although neither worker can start yet
        assert worker_tree(box) == {}
        release.set()
        assert [r.stdout for r in box.run_many(["print(1)", "print(2)", "print(3)"])] == ["1\n", "2\n", "3\n"]
        deadline = time.time() + 10
        while len(worker_tree(box)) < 2 and time.time() < deadline:  # both start, used or not
            time.sleep(0.02)
        pids = sorted(worker_tree(box))
        assert len(pids) == 2
        box.start()  # idempotent: running workers are kept
        assert box.run("print(4)").stdout == "4\n" and sorted(worker_tree(box)) == pids

    # closed while the workers are still starting: none of them is left behind
    def bwrap_pids() -> set[int]:  # ours only: other processes on the machine may run sandboxes too
        pids = set()
        for p in psutil.Process().children():
            try:
                if p.name() == "bwrap":
                    pids.add(p.pid)
            except psutil.Error:
                pass
        return pids

    before = bwrap_pids()
    box = Sandbox(Limits(timeout_s=2.0), workers=2, isolation="bwrap")
    box.start()
    time.sleep(0.01)  # let the background starts get going
    box.close()
    time.sleep(1.0)  # a start that was under way finishes, sees the pool closed and stops its worker
    deadline = time.time() + 10
    while time.time() < deadline and bwrap_pids() - before:
        time.sleep(0.05)
    assert not bwrap_pids() - before


def test_limits_validate():
    with pytest.raises(ValueError, match="timeout_s"):
        Limits(timeout_s=0)
    with pytest.raises(ValueError, match="isolation"):
        Sandbox(isolation="docker")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- fallback


@pytest.fixture(scope="module")
def rlimits_sb():
    os.environ[SECRET_NAME] = SECRET_VALUE  # set before the worker starts: programs must not see it
    with Sandbox(Limits(timeout_s=1.0, memory_mb=256), workers=1, isolation="rlimits") as box:
        yield box
    os.environ.pop(SECRET_NAME, None)


@pytest.mark.parametrize(
    "code, status, detail",
    [
        pytest.param("print(6 * 7)", "ok", lambda r: r.stdout == "42\n", id="ok"),
        pytest.param("while True: pass", "timeout", None, id="infinite-loop"),
        pytest.param("x = bytearray(2 * 2**30)", "memory", None, id="memory-hog"),
        pytest.param(DAEMON, "ok", None, id="daemon"),
        pytest.param(
            f"import os; print({SECRET_NAME!r} in os.environ, sorted(os.environ))",
            "ok",
            lambda r: r.stdout.startswith("False"),
            id="env-secrets",
        ),
    ],
)
def test_rlimits_fallback_basics(rlimits_sb, code, status, detail):
    r = rlimits_sb.run(code)
    shown = (r.status, r.stdout[-300:], r.stderr[-300:])
    assert r.status == status, shown
    assert detail is None or detail(r), shown
    assert r.isolation.startswith("rlimits")
    assert sandbox_processes() == []


def test_rlimits_mode_warns_when_programs_cannot_read_the_interpreter(tmp_path, caplog):
    """As root without bubblewrap, programs run as a throw-away uid: an interpreter under a private
    directory (pyenv in /root, say) then only offers its preloaded modules, and the pool says so."""
    private = tmp_path / "private" / "py"
    private.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    assert _unreadable_to_others([str(private), str(tmp_path / "missing")]) == [str(private), str(tmp_path / "missing")]
    assert _unreadable_to_others(["/usr/lib"]) == []
    hidden = _unreadable_to_others(_python_roots(_interpreter()))
    with caplog.at_level("WARNING", logger="sandbox.core"):
        Sandbox(workers=1, isolation="rlimits").close()
    warned = any("cannot read" in r.getMessage() for r in caplog.records)
    assert warned == bool(os.geteuid() == 0 and hidden)


# A program's damage to its own working directory is its own business: cleaning up after it never turns
# into a sandbox error (a verifier error for the code domains), and the next program starts in an empty one.
LEFTOVERS = {
    "deep-tree": "import os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n    open('f', 'w').write('x')",
    "locked-dirs": "import os\nos.makedirs('a/b/c')\nos.chmod('a/b/c', 0)\nos.chmod('a/b', 0)\nos.chmod('a', 0)",
    "deep-and-locked": "import os\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\nos.chmod('.', 0)",
    "symlink-out": "import os\nos.symlink('/usr', 'usr')\nos.symlink('.', 'loop')",
}


@needs_bwrap
@pytest.mark.parametrize("leftover", sorted(LEFTOVERS))
def test_whatever_a_program_leaves_in_its_directory_is_cleaned_without_a_sandbox_error(leftover):
    with Sandbox(Limits(timeout_s=20), workers=1, isolation="bwrap") as one:  # one worker: the same directory
        r, after = one.run_many([LEFTOVERS[leftover], "import os; print(sorted(os.listdir('.')))"])
    assert (r.status, r.sandbox_error) == ("ok", ""), r
    assert (after.status, after.stdout, after.sandbox_error) == ("ok", "[]\n", "")


# ----------------------------------------------------------------------------- programs sharing a worker

# Programs of one batch run one after another in one worker. None may read another's source, arguments
# or output, leave anything for the next (files, /dev/shm, SysV IPC), inherit a stray fd, or turn its
# own misbehaviour (forging the status pipe, killing its server, undeletable files) into a sandbox error.

MARKERS = {name: "PIDX" + uuid.uuid4().hex for name in ("source", "output", "call", "later")}

SCAN_MEMORY = """
import ctypes, gc, hashlib, os
WANTED = WANTED_HASHES  # sha256 of each marker -> its name: the markers themselves are nowhere in this program
found = set()
def look(data):
    i = data.find(b"PIDX")
    while i != -1:
        name = WANTED.get(hashlib.sha256(data[i : i + 36]).hexdigest())
        if name:
            found.add(name)
        i = data.find(b"PIDX", i + 1)
# Every readable mapping, read with process_vm_readv on ourselves (a fault is an error code, not a
# crash; /proc/self/mem is root's once the uid switch made the process non-dumpable).
libc = ctypes.CDLL(None, use_errno=True)
libc.process_vm_readv.restype = ctypes.c_ssize_t
class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
CHUNK = 1 << 22
buf = ctypes.create_string_buffer(CHUNK + 35)
regions = 0
with open("/proc/self/maps") as f:
    maps = f.read().splitlines()
for line in maps:
    fields = line.split()
    if "r" not in fields[1]:
        continue
    start, end = (int(x, 16) for x in fields[0].split("-"))
    for pos in range(start, end, CHUNK):
        n = min(end - pos, CHUNK + 35)
        local, remote = Iovec(ctypes.addressof(buf), n), Iovec(pos, n)
        got = libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got > 0:
            look(buf.raw[:got])
    regions += 1
gc.unfreeze()
for obj in gc.get_objects():
    for ref in gc.get_referents(obj):
        if isinstance(ref, str):
            look(ref.encode("utf-8", "surrogatepass"))
        elif isinstance(ref, (bytes, bytearray)):
            look(bytes(ref))
print(sorted(found), regions > 10)
""".replace("WANTED_HASHES", repr({hashlib.sha256(m.encode()).hexdigest(): k for k, m in MARKERS.items()}))

SYSV_SHM = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
shmid = libc.shmget(0x5EED, MODE)
print(shmid >= 0, ctypes.get_errno())
if shmid >= 0:
    addr = libc.shmat(shmid, None, 0)
    ctypes.memmove(addr, b"left for the next program", 25)
"""

POSIX_MQUEUE = """
import ctypes, os
rt = ctypes.CDLL("librt.so.1", use_errno=True)
q = rt.mq_open(b"/left", FLAGS, 0o600, None)
print(q >= 0, ctypes.get_errno())
"""

EMPTY = "import os; print(sorted(os.listdir('.')), sorted(os.listdir('/dev/shm')))"  # an honest next program


@dataclass(frozen=True)
class Neighbours:
    """Programs run as one batch on one worker, and what must hold of their results (all free of
    sandbox errors; the last is always EMPTY and must see a clean directory and /dev/shm)."""

    name: str
    programs: tuple[str | Call, ...]
    check: Callable[[list[ExecResult]], bool]


CASES = [
    Neighbours(
        "neighbour_memory",
        (
            f"print({MARKERS['output']!r})  # {MARKERS['source']}",
            Call("echo.say", {"text": MARKERS["call"]}),
            SCAN_MEMORY,
            f"x = {MARKERS['later']!r}",
        ),
        lambda rs: (
            rs[0].stdout == MARKERS["output"] + "\n"
            and rs[1].stdout == MARKERS["call"] + "\n"
            and rs[2].stdout == "[] True\n"
            and rs[3].status == "ok"
        ),
    ),
    Neighbours(
        "fds",
        (
            "import os\nfds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n"
            "print(fds[:4], len(fds), os.readlink('/proc/self/fd/0'))",
        ),
        lambda rs: rs[0].stdout == "[0, 1, 2, 3] 5 /dev/null\n",  # the 5th: listdir's own directory fd
    ),
    Neighbours(
        "sysv_shm",
        (SYSV_SHM.replace("MODE", "4096, 0o1666"), SYSV_SHM.replace("MODE", "0, 0")),
        lambda rs: rs[0].stdout == "True 0\n" and rs[1].stdout == "False 2\n",  # ENOENT: a fresh IPC namespace
    ),
    Neighbours(
        "posix_mqueue",  # none may be made (RLIMIT_MSGQUEUE 0), so none is left for the next program
        (POSIX_MQUEUE.replace("FLAGS", "os.O_CREAT | os.O_RDWR"), POSIX_MQUEUE.replace("FLAGS", "os.O_RDWR")),
        lambda rs: rs[0].stdout == "False 24\n" and rs[1].stdout == "False 2\n",  # EMFILE, then ENOENT
    ),
    Neighbours(
        "dev_shm",
        (
            "open('/dev/shm/x', 'w').write('left for the next program'); import os; os.mkdir('/dev/shm/d', 0)",
            "import os; print(os.path.exists('/dev/shm/x'), os.listdir('/dev/shm'))",
        ),
        lambda rs: rs[0].status == "ok" and rs[1].stdout == "False []\n",
    ),
    Neighbours(
        "status_fd_forge",
        (
            "import os\nos.write(3, b'S forged setup failure')\nos.write(3, b'M' + b'junk' * 100_000)\nprint('done')",
            "import os, sys\nos.write(3, b'R')\nos.close(3)\nsys.exit(3)",
        ),
        lambda rs: (rs[0].status, rs[0].stdout, rs[1].status, rs[1].returncode) == ("ok", "done\n", "error", 3),
    ),
    Neighbours(
        "deep_tree",
        (
            "import os\nfor _ in range(5000):\n    os.mkdir('d')\n    os.chdir('d')\nos.chmod('.', 0)",
            "import os\nos.makedirs('a/b')\nopen('a/b/f', 'w').write('x')\nos.chmod('a/b', 0)\nos.chmod('a', 0)",
        ),
        lambda rs: all(r.status == "ok" for r in rs[:2]),
    ),
    Neighbours(
        "kill_server",
        ("import os\nos.kill(os.getppid(), 9)", "import os\nos.kill(-1, 9)\nprint('alive')"),
        lambda rs: all(r.status in ("ok", "error", "killed") for r in rs[:2]),
    ),
    Neighbours(
        "close_all_fds",
        ("import os\nos.closerange(0, 1024)\nprint('gone')", "import os\nos.closerange(3, 1 << 20)\nprint('fine')"),
        lambda rs: rs[0].status in ("ok", "error") and rs[1].stdout == "fine\n",
    ),
]


@needs_bwrap
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_program_cannot_reach_or_break_others(case):
    prelude = {"echo": "def say(text):\n    print(text)\n"}
    with Sandbox(Limits(timeout_s=20.0), workers=1, isolation="bwrap", prelude=prelude) as one:
        results = one.run_many([*case.programs, EMPTY])
        shown = [(r.status, r.returncode, r.stdout[-200:], r.stderr[-300:], r.sandbox_error, r.damage) for r in results]
        assert all(not r.sandbox_error and r.program_ran for r in results), shown
        assert case.check(results), shown
        assert (results[-1].status, results[-1].stdout) == ("ok", "[] []\n"), shown
        assert sandbox_processes() == []


def patched_server(monkeypatch, code: str) -> None:
    """Workers started from now on run the fork-server with `code` appended (before main() runs):
    a way to make the sandbox itself fail where no program can."""
    import sandbox.core

    source = sandbox.core._SERVER_SOURCE
    tail = '\nif __name__ == "__main__":'
    assert tail in source
    monkeypatch.setattr(sandbox.core, "_SERVER_SOURCE", source.replace(tail, "\n" + code + tail))


@needs_bwrap
def test_files_the_sandbox_cannot_remove_are_the_programs_damage(monkeypatch):
    """Cleanup failing after a program is noted on its result (never a sandbox error); the worker is
    replaced, and the rest of the batch runs on a fresh one in an empty directory."""
    patched_server(
        monkeypatch,
        "_real_clean = _clean_workdir\n"
        "def _clean_workdir(cfg):\n"
        "    if os.stat(_WORKDIR).st_nlink > 2:  # it made a subdirectory (the server cannot look inside)\n"
        "        raise RuntimeError('simulated')\n"
        "    _real_clean(cfg)\n",
    )
    with Sandbox(Limits(timeout_s=5.0), workers=1, isolation="bwrap") as one:
        damaged, after, empty = one.run_many(["import os; os.mkdir('undeletable'); print('wrote')", "print(2)", EMPTY])
    assert (damaged.status, damaged.stdout, damaged.sandbox_error, damaged.program_ran) == ("ok", "wrote\n", "", True)
    assert "could not remove" in damaged.damage and "simulated" in damaged.damage
    assert (after.status, after.stdout, after.damage, empty.stdout) == ("ok", "2\n", "", "[] []\n")


@needs_bwrap
def test_a_setup_failure_is_a_sandbox_error_and_the_rest_still_runs(monkeypatch):
    """A child that fails before `R` has not read its body: the request stream is out of sync, so the
    worker stops after that result and the host runs the rest of the batch on a fresh one."""
    patched_server(
        monkeypatch,
        "_real_setup = _setup_child\n"
        "def _setup_child(limits, rfd, body_len, *fds):\n"
        "    if body_len == len('pass # fail setup'):\n"
        "        os.dup2(fds[2], 3)  # the status pipe: where the real setup reports its failures\n"
        "        raise OSError('simulated setup failure')\n"
        "    return _real_setup(limits, rfd, body_len, *fds)\n",
    )
    with Sandbox(Limits(timeout_s=5.0), workers=1, isolation="bwrap") as one:
        before, failed, after = one.run_many(["print(1)", "pass # fail setup", "print('x' * 100_000)"])
    assert (before.stdout, after.stdout, after.sandbox_error) == ("1\n", "x" * 100_000 + "\n", "")
    assert failed.status == "error" and not failed.program_ran
    assert failed.sandbox_error == "sandbox setup failed: OSError: simulated setup failure"


VICTIM = f"""
import time
time.sleep(0.3)
{SET_NAME.format("pidistill-vict")}
time.sleep(3)
print('survived')
"""


@needs_bwrap
@pytest.mark.parametrize("kills", [1, 2])
@pytest.mark.parametrize("shared_uid", [True, False], ids=["shared-uid", "own-uid"])
def test_a_worker_killed_under_a_program_reruns_it_then_counts_against_it(kills, shared_uid, monkeypatch):
    """The worker dies while a program runs: the program runs again alone on a fresh worker. If that
    dies too: where programs share the server's uid (no root) the program could have killed it, so
    it was killed, not the sandbox; where it runs under a uid of its own it cannot signal the server,
    so a worker dying under it twice is the sandbox's failure. (Shared-uid mode, as root here: the
    host takes itself for non-root and starts bubblewrap in a user namespace.)"""
    if shared_uid:
        monkeypatch.setattr("sandbox.core.os.geteuid", lambda: 1000)
    with Sandbox(Limits(timeout_s=10.0), workers=1, isolation="bwrap") as one:
        assert one.uid_separated is not shared_uid
        killed: list[int] = []
        done = threading.Event()

        def killer() -> None:
            while not done.is_set() and len(killed) < kills:
                worker = one._all_slots[0].worker
                victim = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "pidistill-vict"]
                if victim and worker is not None and worker.proc.pid not in killed:
                    killed.append(worker.proc.pid)
                    worker.proc.kill()
                time.sleep(0.02)

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            before, r, after = one.run_many(["print(1)", VICTIM, "print(3)"])
        finally:
            done.set()
            thread.join()
    assert len(killed) == kills
    assert (before.stdout, after.stdout, before.sandbox_error, after.sandbox_error) == ("1\n", "3\n", "", "")
    if kills == 1:
        assert (r.status, r.stdout, r.sandbox_error) == ("ok", "survived\n", "")
    elif shared_uid:
        assert (r.status, r.stdout, r.stderr, r.sandbox_error) == (
            "killed",
            "",
            "[sandbox: the worker died while this program ran]",
            "",
        )
        assert r.program_ran
    else:
        assert r.status == "error" and "worker" in r.sandbox_error


def test_uid_separated_says_whether_programs_run_as_their_own_uid():
    with Sandbox(workers=1) as box:
        assert box.uid_separated == (os.geteuid() == 0)
