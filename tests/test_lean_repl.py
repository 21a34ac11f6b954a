"""The process layer (`lean_env.repl`, `lean_env.pool`) against a test double.

No Lean binary can be installed where these tests run, so the REPL is played
by `tests/lean_double.py`: a small Python program started as a real
subprocess that speaks the REPL's stdin/stdout framing and answers from the
transcripts real Lean recorded (`../shared/data/lean_repl_transcripts`). Its
knobs make it hang, crash, leak memory, print noise or fail to start, so
timeouts, crash + restart (header re-imported), the RLIMIT_AS cap, RSS
recycling and pool parallelism are exercised on real pipes and processes.
The same code paths against real Lean are in `test_lean_real.py` (run when
`lake` is on PATH).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil
import pytest

from domains import data_root
from lean_env.pool import ReplPool
from lean_env.protocol import (
    CommandResponse,
    LeanError,
    parse_request,
    parse_response,
    read_request_blocks,
    split_responses,
)
from lean_env.repl import (
    LeanNotFound,
    LeanRepl,
    ReplConfig,
    ReplCrashed,
    ReplStartError,
    ReplTimeout,
    preflight,
)

ROOT = data_root() / "lean_repl_transcripts"
DOUBLE = str(Path(__file__).with_name("lean_double.py"))
HEADER = "import Mathlib\nopen BigOperators\nopen Real\nopen Nat"  # recorded in Mathlib/pickle.in
# Recorded Mathlib commands (run in env 0 after an import) and what Lean said.
COMPLETE = (
    "example {n} {x a b : ℝ} (m : ℕ) (e₁ : n + 1 = m) (rm : ℝ) (er : ↑m = rm) (h : |x| ≤ 1) "
    "(e : |1 - a| ≤ b - |x| / rm * ((rm + 1) / rm)) : |exp x - expNear n x a| ≤ |x| ^ n / n.factorial * b "
    ":= by apply Real.exp_approx_end' m e₁ rm er h e"
)  # Mathlib/H20231110: {"env": 1}
UNSOLVED = "example {x : Nat} : x + 1 > x := by\n  induction' x with x hx"  # Mathlib/H20231115_3: unsolved goals
SORRY = "theorem mathd_algebra_455\n  (x : Nat)\n  (h : 2 * (2 * (2 * (2 * x))) = 48) :\n  x = 3 := by sorry"


def config(*knobs: str, mode: str = "--lookup", **kw) -> ReplConfig:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("startup_timeout", 10.0)
    kw.setdefault("memory_mb", None)
    kw.setdefault("max_rss_mb", None)
    return ReplConfig(command=[sys.executable, DOUBLE, mode, str(ROOT), *knobs], **kw)


def logged(path: Path) -> list[tuple[int, dict]]:
    if not path.exists():
        return []
    return [tuple(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]


def header_imports(log: Path) -> list[int]:
    return [pid for pid, req in logged(log) if req.get("cmd") == HEADER]


def test_replay_every_transcript_through_one_process():
    """All 213 recorded requests, serialised by the protocol layer, are accepted
    by the double (it checks each against the recording) and every recorded
    answer comes back through the pipe framing as the same typed response."""
    names = sorted(str(p.relative_to(ROOT))[:-3] for p in ROOT.rglob("*.in"))
    n = 0
    with LeanRepl(config("--names", ",".join(names), mode="--replay")) as repl:
        for name in names:
            requests = read_request_blocks((ROOT / f"{name}.in").read_text(encoding="utf-8"))
            responses = split_responses((ROOT / f"{name}.expected.out").read_text(encoding="utf-8"))
            for block, text in zip(requests, responses):
                req = parse_request(block)
                assert repl.run(req) == parse_response(text, req), name
                n += 1
        assert repl.stats.starts == 1 and repl.stats.noise == []
    assert n == 213


def test_header_imported_once_and_env_reused(tmp_path):
    log = tmp_path / "log"
    with LeanRepl(config("--log", str(log))) as repl:
        outs = [repl.check(code, header=HEADER) for code in (COMPLETE, UNSOLVED, SORRY, COMPLETE)]
        assert [o.status for o in outs] == ["ok"] * 4
        assert outs[0].response.messages == () and outs[0].response.sorries == ()
        assert "unsolved goals" in outs[1].response.errors[0].data
        assert outs[2].response.sorries[0].goal.endswith("⊢ x = 3")
        assert repl.stats.header_imports == 1
    requests = [req for _, req in logged(log)]
    assert requests[0] == {"cmd": HEADER}
    assert [r.get("env") for r in requests[1:]] == [0, 0, 0, 0]  # every proof on the header env


def test_timeout_kills_and_restarts_with_header(tmp_path):
    log = tmp_path / "log"
    with LeanRepl(config("--hang-on", "HANG", "--log", str(log), timeout=0.5)) as repl:
        assert repl.check(COMPLETE, header=HEADER).status == "ok"
        pid = repl.pid
        t0 = time.monotonic()
        out = repl.check(COMPLETE + " -- HANG", header=HEADER)
        assert out.status == "timeout" and time.monotonic() - t0 < 3
        assert "0.5s" in out.detail and out.response is None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        again = repl.check(UNSOLVED, header=HEADER)  # fresh process, header imported again
        assert again.status == "ok" and again.response.has_errors
        assert repl.pid != pid and repl.stats.timeouts == 1 and repl.stats.starts == 2
    assert len(header_imports(log)) == 2 and len(set(header_imports(log))) == 2


def test_crash_reports_stderr_and_restarts(tmp_path):
    log = tmp_path / "log"
    with LeanRepl(config("--crash-on", "CRASH", "--log", str(log))) as repl:
        assert repl.check(SORRY, header=HEADER).status == "ok"
        out = repl.check("theorem x : CRASH", header=HEADER)
        assert out.status == "crash" and "INTERNAL PANIC" in out.detail and "exit code 1" in out.detail
        assert repl.check(SORRY, header=HEADER).status == "ok"
        assert repl.stats.crashes == 1 and repl.stats.header_imports == 2
    assert len(set(header_imports(log))) == 2


def test_raw_run_raises_process_failures():
    with LeanRepl(config("--hang-on", "HANG", "--crash-on", "CRASH", timeout=0.3)) as repl:
        with pytest.raises(ReplTimeout, match="no answer within 0.3s"):
            repl.run(parse_request({"cmd": "HANG"}))
        with pytest.raises(ReplCrashed) as info:
            repl.run(parse_request({"cmd": "CRASH"}))
        assert info.value.returncode == 1 and "out of memory" in info.value.stderr
        # Lean-level errors are values, not exceptions
        assert isinstance(repl.run(parse_request({"cmd": "x", "env": 7})), LeanError)


@pytest.mark.parametrize("rlimit", ["AS", "DATA"])
def test_memory_cap_is_an_rlimit(rlimit):
    """With RLIMIT_AS (or RLIMIT_DATA) at 256 MiB, a REPL leaking 40 MiB per
    command dies of MemoryError (as Lean panics when out of memory); the proof
    that hit it is a crash with the panic text, and the next one runs in a
    fresh process."""
    with LeanRepl(config("--leak-mb", "40", memory_mb=256, rlimit=rlimit)) as repl:
        outs = []
        for _ in range(12):
            outs.append(repl.check(COMPLETE, header=HEADER))
            if outs[-1].status == "crash":
                break
        assert outs[-1].status == "crash" and "out of memory" in outs[-1].detail
        assert 1 < len(outs) < 8  # a few commands fit under the cap, not all of them
        assert repl.check(COMPLETE, header=HEADER).status == "ok" and repl.stats.starts == 2


def test_leaking_repl_is_recycled_by_rss():
    with LeanRepl(config("--leak-mb", "30", max_rss_mb=60)) as repl:
        first = repl.check(COMPLETE, header=HEADER)  # ~15 MiB interpreter + 30 MiB: kept
        assert first.status == "ok" and repl.stats.recycles == 0 and repl.alive
        repl.check(COMPLETE, header=HEADER)  # ~75 MiB: recycled after answering
        assert repl.stats.recycles == 1 and not repl.alive and repl.stats.last_rss_mb > 60
        assert repl.check(UNSOLVED, header=HEADER).status == "ok" and repl.stats.starts == 2


def test_max_commands_recycles():
    with LeanRepl(config(max_commands=2)) as repl:
        for _ in range(3):
            assert repl.check(COMPLETE, header=HEADER).status == "ok"
        assert repl.stats.recycles == 1 and repl.stats.starts == 2 and repl.stats.header_imports == 2


def test_noise_on_stdout_does_not_shift_answers():
    with LeanRepl(config("--banner", "warning: manifest out of date")) as repl:
        out = repl.check(UNSOLVED, header=HEADER)
        assert out.status == "ok" and out.response.has_errors
        assert repl.check(COMPLETE, header=HEADER).response.errors == ()
        assert repl.stats.noise == ["warning: manifest out of date"]


def test_start_failure_raises_with_stderr():
    with LeanRepl(config("--fail-start", "error: unknown executable repl")) as repl:
        with pytest.raises(ReplStartError, match="unknown executable repl"):
            repl.check(COMPLETE, header=HEADER)


def test_header_with_errors_raises():
    with LeanRepl(config()) as repl:
        with pytest.raises(ReplStartError, match="header does not compile"):
            repl.header_env("example {x : Nat} : x + 1 > x := by\n  induction' x with x hx")


def test_missing_lean_is_lean_not_found(tmp_path, monkeypatch):
    monkeypatch.delenv("PIDISTILL_LEAN_PROJECT", raising=False)
    monkeypatch.delenv("PIDISTILL_LEAN_REPL", raising=False)
    with pytest.raises(LeanNotFound, match="Lean not found, see pidistill doctor"):
        preflight(ReplConfig(command="no-such-lean-repl-binary"))
    with pytest.raises(LeanNotFound, match="PIDISTILL_LEAN_PROJECT"):
        preflight(ReplConfig())  # `lake env repl` needs a project
    with pytest.raises(LeanNotFound, match="not a Lake project"):
        preflight(ReplConfig(project_dir=tmp_path))
    with pytest.raises(LeanNotFound, match="does not exist"):
        preflight(ReplConfig(project_dir=tmp_path / "nope"))
    (tmp_path / "lakefile.toml").write_text("")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LeanNotFound, match="`lake` is not on PATH"):
        LeanRepl(ReplConfig(project_dir=tmp_path)).check("example : True := trivial")


def test_config_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PIDISTILL_LEAN_PROJECT", str(tmp_path))
    monkeypatch.setenv("PIDISTILL_LEAN_REPL", "lake exe repl")
    cfg = ReplConfig()
    assert cfg.project_dir == tmp_path and cfg.command == ("lake", "exe", "repl") and cfg.uses_lake
    assert ReplConfig(command="/opt/repl --x", project_dir="~/p").command == ("/opt/repl", "--x")


def test_pool_checks_in_parallel_and_keeps_order(tmp_path):
    log = tmp_path / "log"
    codes = [COMPLETE, UNSOLVED, SORRY, COMPLETE]
    with ReplPool(config("--delay", "0.5", "--log", str(log)), size=2) as pool:
        pool.check_many([COMPLETE, COMPLETE], header=HEADER)  # warm both (starts overlap too)
        t0 = time.monotonic()
        outs = pool.check_many(codes, header=HEADER)
        took = time.monotonic() - t0
        assert [o.status for o in outs] == ["ok"] * 4
        errors = [bool(o.response.errors) for o in outs]
        sorries = [bool(o.response.sorries) for o in outs]
        assert errors == [False, True, False, False] and sorries == [False, False, True, False]
        assert took < 1.75, f"4 proofs x 0.5 s on 2 REPLs took {took:.2f}s"  # sequential would be >= 2 s
        assert pool.stats()["header_imports"] == 2 and pool.stats()["starts"] == 2
    pids = {pid for pid, req in logged(log) if "env" in req}
    assert len(pids) == 2


def test_pool_isolates_a_crash():
    with ReplPool(config("--crash-on", "CRASH"), size=2) as pool:
        outs = pool.check_many([COMPLETE, "theorem CRASH", UNSOLVED, SORRY], header=HEADER)
        assert [o.status for o in outs] == ["ok", "crash", "ok", "ok"]
        assert isinstance(outs[2].response, CommandResponse) and outs[2].response.has_errors


def test_pool_start_failure_raises_before_any_success():
    with ReplPool(config("--fail-start", "lake: unknown package 'mathlib'"), size=2) as pool:
        with pytest.raises(ReplStartError, match="unknown package"):
            pool.check_many([COMPLETE, UNSOLVED], header=HEADER)


def test_close_ends_the_process():
    repl = LeanRepl(config())
    repl.check(COMPLETE, header=HEADER)
    proc = psutil.Process(repl.pid)
    repl.close()
    assert not repl.alive
    assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


def test_doctor_reports_each_piece(tmp_path, monkeypatch):
    from lean_env.doctor import doctor, format_doctor

    monkeypatch.delenv("PIDISTILL_LEAN_PROJECT", raising=False)
    monkeypatch.delenv("PIDISTILL_LEAN_REPL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no lake, no lean
    rows = doctor()
    assert [name for name, _, _ in rows] == ["lake", "lean", "project", "toolchain", "mathlib", "repl"]
    assert not any(ok for _, ok, _ in rows)
    text = format_doctor(rows)
    assert text.count("[FAIL]") == 6 and "PIDISTILL_LEAN_PROJECT" in text
    # a project laid out like `lake new ... math` + REPL, with Mathlib built
    (tmp_path / "lakefile.toml").write_text("")
    (tmp_path / "lean-toolchain").write_text("leanprover/lean4:v4.33.0-rc2\n")
    mathlib = tmp_path / ".lake" / "packages" / "mathlib"
    (mathlib / ".lake" / "build" / "lib" / "lean").mkdir(parents=True)
    (mathlib / "Mathlib.lean").write_text("")
    (mathlib / ".lake" / "build" / "lib" / "lean" / "Mathlib.olean").write_text("")
    repl = tmp_path / ".lake" / "packages" / "REPL" / ".lake" / "build" / "bin" / "repl"
    repl.parent.mkdir(parents=True)
    repl.write_text("#!/bin/sh\n")
    repl.chmod(0o755)
    rows = dict((name, (ok, detail)) for name, ok, detail in doctor(project_dir=tmp_path))
    assert rows["project"][0] and rows["toolchain"] == (True, "leanprover/lean4:v4.33.0-rc2")
    assert rows["mathlib"][0] and rows["repl"][0] and str(repl) in rows["repl"][1]
    assert not rows["lake"][0]
