"""The `pidistill` command on bad and ordinary input: one clear line, the right exit status, nothing
half-written, no process left behind. Each case is one a new user hit (issue: a newcomer's first hour)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.main import main
from experiments.config import load_config
from tasks.runs import write_run

REPO = Path(__file__).resolve().parent.parent


def _pidistill(*args: str) -> list[str]:
    exe = Path(sys.executable).parent / "pidistill"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "cli.main", *args]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_report_of_a_run_with_no_evaluation_says_so(capsys, pidistill_home: Path):
    write_run(load_config("demo"), "died-early", "failed", datetime.now(UTC), error="MemoryError: out of it")
    assert main(["report"]) == 2  # the latest run, by default
    line = _one_line(capsys.readouterr().err)
    assert line == "pidistill report: run 'died-early' is failed and has no evaluation yet: MemoryError: out of it"
    write_run(load_config("demo"), "still-going", "running", datetime.now(UTC))
    assert main(["report", "still-going"]) == 2
    assert "run 'still-going' is running and has no evaluation yet" in _one_line(capsys.readouterr().err)


def test_an_unknown_hub_model_fails_at_once_and_writes_nothing(capsys, pidistill_home: Path):
    """Offline (the suite sets HF_HUB_OFFLINE): one line naming the model, not minutes of hub retries."""
    started = time.monotonic()
    assert main(["run", "demo", "--set", "model=Qwen/DoesNotExist-0B"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "'Qwen/DoesNotExist-0B' is not in the local Hugging Face cache" in line and "HF_HUB_OFFLINE" in line
    assert time.monotonic() - started < 30
    assert not pidistill_home.exists() or not any(pidistill_home.iterdir())


@pytest.mark.parametrize("run_id", ["bad/../id", "../outside", "/abs", "", "a b", "x" * 129])
def test_a_run_id_must_name_a_folder_inside_the_home(run_id, capsys, pidistill_home: Path):
    assert main(["run", "demo", "--run-id", run_id]) == 2
    assert "--run-id" in _one_line(capsys.readouterr().err)
    assert not pidistill_home.exists() or not any(pidistill_home.iterdir())


def test_description_and_seed_result_do_not_move_the_config_hash():
    base = load_config("demo")
    edited = load_config("demo", ["description=edited in the UI form", "seed_result=whatever"])
    assert edited.config_hash() == base.config_hash()
    assert load_config("demo", ["train.lr=0.5"]).config_hash() != base.config_hash()


def test_a_run_resumes_after_its_description_changed(pidistill_home: Path):
    from tasks.runs import check_resumable

    write_run(load_config("demo"), "r", "failed", datetime.now(UTC))
    assert check_resumable(load_config("demo", ["description=new words"]), "r")["status"] == "failed"


@pytest.mark.parametrize("max_rows", ["-5", "0"])
def test_sql_max_rows_must_be_positive(max_rows, capsys):
    assert main(["sql", "select 1", "--max-rows", max_rows]) == 2
    assert _one_line(capsys.readouterr().err) == f"pidistill sql: --max-rows {max_rows}: give at least 1"


def test_sql_into_a_closed_pipe_is_quiet(pidistill_home: Path):
    env = {**os.environ, "PIDISTILL_HOME": str(pidistill_home)}
    cmd = " ".join(_pidistill("sql", "'select range from range(100000)'", "--max-rows", "100000")) + " | head -2"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[0].strip() == "range" and done.stderr == "", done.stderr
    assert done.returncode == 0


def test_help_version_and_did_you_mean(capsys):
    assert main([]) == 0  # bare `pidistill` shows the help
    out = capsys.readouterr().out
    assert "Usage: pidistill COMMAND" in out and "Examples:" in out and "pidistill run star-try-again --smoke" in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pidistill 0.")
    assert main(["rn", "demo"]) == 2
    assert 'Did you mean "run"?' in _one_line(capsys.readouterr().err)
    assert main(["sql", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("attempts", "evaluations", "stages", "nightly_arms", "summary", "compute", "nightly"):
        assert name in out, name


@pytest.mark.slow
def test_resuming_a_run_another_process_holds_is_one_line(pidistill_home: Path):
    """Not a config error, and no traceback: the run is busy."""
    env = {**os.environ, "PIDISTILL_HOME": str(pidistill_home), "PYTHONUNBUFFERED": "1"}
    code = (
        "import sys; sys.path.insert(0, '.'); from tasks.runs import run_lock\nwith run_lock('busy'):\n"
        "    print('locked', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        done = subprocess.run(
            _pidistill("run", "demo", "--run-id", "busy"),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        holder.communicate("", timeout=30)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "config error" not in done.stderr, done.stderr[-3000:]
    said = f"pidistill: run busy is being written by another process (pid {holder.pid})"
    assert any(line.startswith(said) for line in done.stderr.splitlines()), done.stderr[-3000:]


@pytest.mark.slow
def test_sigterm_stops_the_run_and_its_prefect_server(pidistill_home: Path, tmp_path: Path):
    """What `timeout`, SLURM and CI send: the run ends failed, and its temporary Prefect server goes with it."""
    import psutil

    env = {
        **os.environ,
        "PIDISTILL_HOME": str(pidistill_home),
        "PYTHONUNBUFFERED": "1",
        "PIDISTILL_MODEL_CACHE": str(tmp_path / "models"),
    }
    env.pop("PREFECT_API_URL", None)
    run = subprocess.Popen(
        _pidistill("run", "demo", "--run-id", "termed"),
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out = ""
        deadline = time.monotonic() + 240
        while "Building the tiny model" not in out and time.monotonic() < deadline:  # the flow is running
            out += run.stdout.readline()
        assert "Building the tiny model" in out, out
        family = psutil.Process(run.pid).children(recursive=True)
        assert family, "the run has a temporary Prefect server"
        run.send_signal(signal.SIGTERM)
        out += run.communicate(timeout=120)[0]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode != 0
    deadline = time.monotonic() + 30
    while (
        left := [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], [p.cmdline() for p in left]
    from storage.catalog import query

    assert query("select status from runs where run_id = 'termed'").status.tolist() == ["failed"]


def test_doctor_says_what_runs_here_and_fails_only_on_what_is_broken(capsys, monkeypatch, tmp_path: Path):
    """Optional Lean is one '--' line, not six FAILs; home, data, models and the hub are reported (issue 15)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["doctor"]) == 0
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("[")}
    assert {"torch", "home", "data", "models", "hub", "sandbox", "lean"} <= set(lines)
    assert not any(line.startswith("[FAIL]") for line in lines.values())
    if not shutil.which("lake"):
        assert lines["lean"].startswith("[--]") and "optional" in lines["lean"]
    assert "offline" in lines["hub"]
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("PIDISTILL_HOME", str(blocked / "home"))  # under a file: cannot be created
    assert main(["doctor"]) == 1
    assert "[FAIL] home" in capsys.readouterr().out


def test_doctor_fails_when_programs_would_share_the_sandbox_uid(capsys, monkeypatch):
    """Not root: a program could forge its batch's results, so the code domains refuse (issue 17)."""
    from sandbox import Sandbox

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(Sandbox, "uid_separated", property(lambda self: False))
    assert main(["doctor"]) == 1
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("[FAIL] sandbox"))
    assert "uid" in line and "root" in line


@pytest.mark.parametrize(
    "args, parsed",
    [
        (["select 1"], ("select 1", "table", "200")),
        (["select 1", "--format", "csv", "--max-rows=5"], ("select 1", "csv", "5")),
        (["--max-rows", "3", "select 1"], ("select 1", "table", "3")),
        (["--help"], None),  # the full CLI's help
        (["select 1", "--format", "json"], None),  # the full CLI names the choices
        (["select 1", "--bogus"], None),
        (["select 1", "select 2"], None),
        (["select 1", "--max-rows"], None),
        ([], None),
    ],
)
def test_plain_sql_command_lines_take_the_fast_path(args, parsed):
    from cli.sql import parse

    assert parse(args) == parsed


def test_sql_fast_path_prints_what_the_full_cli_prints(pidistill_home: Path, capsys):
    from cli.entry import main as entry

    query = "select range as n, range / 3 as third, 'row ' || range as label, null as nothing from range(7)"
    for args in (["sql", query], ["sql", query, "--max-rows", "4"], ["sql", query, "--format", "csv"]):
        assert entry(args) == 0
        fast = capsys.readouterr().out
        assert main(args) == 0
        assert capsys.readouterr().out == fast
    assert entry(["sql", query, "--max-rows", "4"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "  n    third label nothing",
        "  0 0.000000 row 0    NULL",
        "  1 0.333333 row 1    NULL",
        "...      ...   ...     ...",
        "  5 1.666667 row 5    NULL",
        "  6 2.000000 row 6    NULL",
        "",
        "[7 rows x 4 columns]",
    ]
    assert entry(["sql", "select * from nope"]) == 2
    assert "pidistill sql: Catalog Error: Table with name nope does not exist" in capsys.readouterr().err


def test_a_cold_sql_process_imports_neither_pandas_nor_the_cli_framework(pidistill_home: Path):
    from storage.catalog import ensure_catalog

    ensure_catalog()  # as the analyst's first command left it (building it imports the table schemas)
    code = (
        "import sys; from cli.entry import main; main(['sql', 'select count(*) from attempts']);"
        "print(sorted(m for m in ('pandas', 'cyclopts', 'pydantic', 'prefect', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "PIDISTILL_HOME": str(pidistill_home)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.splitlines()[-1] == "[]", out.stdout + out.stderr
