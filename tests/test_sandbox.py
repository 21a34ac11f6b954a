"""The sandbox contains hostile programs, enforces its limits, runs fast, and leaks nothing.

Adversarial programs run in bubblewrap mode (skipped where bubblewrap cannot run); a few
checks also cover the rlimits-only fallback.
"""

from __future__ import annotations

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
    r = sb.run(
        DAEMON.replace("time.sleep(300)", "open('/proc/self/comm', 'w').write('pidistill-dmn'); time.sleep(300)")
    )
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
    def bwrap_pids() -> set[int]:
        return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "bwrap"}

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
