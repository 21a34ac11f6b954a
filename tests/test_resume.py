"""Crash safety: a run SIGKILLed at several points and resumed equals an uninterrupted run.

Everything is real: `pidistill run` subprocesses against one Prefect server on loopback
(so a killed process leaves no ephemeral server behind), the tiny model, TRL training,
parquet and DuckDB. The kill points are reached through PIDISTILL_FAULT_KILL_AT, which
makes the process SIGKILL itself at a named point (see tasks.resume.fault_point): the
same signal as an OOM killer or a lost machine, at a reproducible place.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from experiments.config import ConfigError, load_config
from storage.catalog import query
from storage.compact import COMPACTED
from tasks.failures import is_infrastructure_failure
from tasks.runs import RunInUse, check_resumable, run_lock, write_run

REPO = Path(__file__).resolve().parent.parent

CFG = [
    "seeds=[0]",
    "rounds=1",
    "domain.train_size=12",
    "domain.eval_size=16",
    "sampling.n=2",
    "train.epochs=1",
    "train.batch_size=4",
    "retry.max_retries=1",
    "retry.feedback=previous_attempt",
    "arms=[{name: retry}]",
]
ROUND_KEYED = ("attempts", "sft_examples", "trainings", "evaluations", "stages")
SET = [a for item in CFG for a in ("--set", item)]

# Where the crashing run dies, one point per attempt (each attempt resumes the previous one):
KILLS = [
    "sample#3",  # during sampling: round 1's retry level (draws: base eval, round 1 tries, round 1 retries)
    "after:filter#1",  # between stages: round 1's filter saved, training not started
    "train#1",  # during training: after the first optimizer step, a temp checkpoint folder exists
    # Compacting the finished run (storage.compact), tables in storage.schema.TABLES order:
    "compact:staged#1",  # attempts' compacted file staged, not swapped in
    "compact:swapped#2",  # attempts and sft_examples swapped, their old shards not yet deleted
]

COMPARED = (
    "arm, seed, round, phase, problem_id, attempt_idx, sample_idx, parent_id is null as first, "
    "prompt, completion, status, passed, score, accepted, reject_reason, pi_kind"
)


def _pidistill(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


class Reader(threading.Thread):
    """Queries the catalog in a loop, as an analyst would while runs write; records every error."""

    def __init__(self, home: Path) -> None:
        super().__init__(daemon=True)
        self.home, self.stop, self.ok, self.errors = home, threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            for sql in (
                "select run_id, count(*) from attempts group by all",
                "select * from summary",
                "select * from runs",
                "select stage, sum(seconds) from stages group by all",
            ):
                try:
                    query(sql, home=self.home)
                    self.ok += 1
                except Exception as exc:
                    self.errors.append(f"{sql}: {type(exc).__name__}: {exc}")
            time.sleep(0.05)


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted_run(tiny_model, prefect_server, pidistill_home):
    env = {
        **os.environ,
        "PIDISTILL_HOME": str(pidistill_home),
        "PREFECT_API_URL": prefect_server,
        "PYTHONUNBUFFERED": "1",
    }
    reader = Reader(pidistill_home)
    reader.start()
    try:
        # The reference run and the first crashing attempt write to the same home at once.
        ref = _pidistill(["run", "demo", "--run-id", "ref", *SET], env)
        logs, left = [], {}
        for point in KILLS:
            crash = _pidistill(["run", "demo", "--run-id", "crash", *SET], {**env, "PIDISTILL_FAULT_KILL_AT": point})
            out, _ = crash.communicate(timeout=900)
            logs.append(out)
            assert crash.returncode == -9, f"expected a SIGKILL at {point}, got rc={crash.returncode}:\n{out[-3000:]}"
            left[point] = sorted(p.name for p in (pidistill_home / "crash").rglob("*.tmp-*"))
        final = _pidistill(["run", "demo", "--run-id", "crash", *SET], env)
        out, _ = final.communicate(timeout=900)
        assert final.returncode == 0, out[-3000:]
        ref_out, _ = ref.communicate(timeout=900)
        assert ref.returncode == 0, ref_out[-3000:]
    finally:
        reader.stop.set()
        reader.join(timeout=30)

    assert "resuming run crash (was running)" in logs[1] and "resuming run crash (was running)" in out
    assert any(name.startswith("round=1.tmp-") for name in left["train#1"]), left  # a half-saved checkpoint...
    assert any(name.startswith("attempts.tmp-compact-") for name in left["compact:staged#1"]), left
    assert any(name.startswith("sft_examples.tmp-compact-") for name in left["compact:swapped#2"]), left
    status = query("select run_id, status from runs order by run_id", home=pidistill_home)
    assert status.values.tolist() == [["crash", "completed"], ["ref", "completed"]]

    # The same attempts, verdicts and decisions as the uninterrupted run...
    def rows(table: str, cols: str, run_id: str) -> list:
        return query(
            f"select {cols} from {table} where run_id = '{run_id}' order by all", home=pidistill_home
        ).values.tolist()

    assert rows("attempts", COMPARED, "crash") == rows("attempts", COMPARED, "ref")
    assert len(rows("attempts", "1", "crash")) > 50
    assert rows("evaluations", "arm, seed, round, problem_id, n, n_pass", "crash") == rows(
        "evaluations", "arm, seed, round, problem_id, n, n_pass", "ref"
    )
    assert rows("sft_examples", "round, problem_id, prompt, completion", "crash") == rows(
        "sft_examples", "round, problem_id, prompt, completion", "ref"
    )
    assert rows("trainings", "round, n_examples, steps", "crash") == rows(
        "trainings", "round, n_examples, steps", "ref"
    )
    # ... nothing written twice ...
    dupes = query("select attempt_id, count(*) n from attempts group by 1 having n > 1", home=pidistill_home)
    assert dupes.empty, dupes
    stage_dupes = query(
        "select run_id, arm, seed, round, stage, attempt_idx, shard, count(*) n from stages group by all having n > 1",
        home=pidistill_home,
    )
    assert stage_dupes.empty, stage_dupes
    # ... no temp file or folder left by the killed writers ...
    assert not [p for p in pidistill_home.rglob("*.tmp-*")], list(pidistill_home.rglob("*.tmp-*"))
    # ... both runs compacted to one file per table ...
    for run in ("crash", "ref"):
        files = sorted(str(p.relative_to(pidistill_home / run)) for p in (pidistill_home / run).rglob("*.parquet"))
        assert files == sorted(
            f"{t}/{name}"
            for t, name in [(t, COMPACTED) for t in ROUND_KEYED]
            + [("runs", "run.parquet"), ("arm_results", "arms.parquet")]
        ), files
    # ... and the analyst's queries never failed while the runs wrote and died.
    assert reader.errors == [] and reader.ok > 20, reader.errors[:5]


# ----------------------------------------------------------------------------- fast checks


def test_resume_refuses_another_config_under_the_same_run_id():
    cfg = load_config("demo", ["rounds=1"])
    assert check_resumable(cfg, "r1") is None  # a new id
    with run_lock("r1"):
        write_run(cfg, "r1", "running", __import__("datetime").datetime.now())
    assert check_resumable(cfg, "r1")["status"] == "running"
    other = load_config("demo", ["rounds=2", "train.lr=0.001"])
    with pytest.raises(ConfigError, match=r"rounds: 1 -> 2.*train.lr: 0.0003 -> 0.001"):
        check_resumable(other, "r1")


def test_a_run_being_written_cannot_be_joined_and_a_dead_writer_releases_it(pidistill_home):
    with run_lock("r2"):
        with pytest.raises(RunInUse, match=rf"pid {os.getpid()}"):
            with run_lock("r2"):
                pass
    # A holder killed with SIGKILL releases the lock at once (the OS drops it).
    code = (
        "import sys, time; sys.path.insert(0, '.'); from tasks.runs import run_lock\n"
        "with run_lock('r3'):\n    print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PIDISTILL_HOME": str(pidistill_home)},
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunInUse):
        with run_lock("r3"):
            pass
    holder.kill()
    holder.wait()
    with run_lock("r3"):
        pass


def test_cli_resume_with_another_config_exits_2(capsys):
    from cli.main import main

    with run_lock("r4"):
        write_run(load_config("demo", ["rounds=1"]), "r4", "failed", __import__("datetime").datetime.now())
    assert main(["run", "demo", "--run-id", "r4", "--set", "rounds=3"]) == 2
    assert "that run was started with another config (rounds: 1 -> 3)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (MemoryError(), True),
        (OSError("disk"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate"), True),
        (ConnectionError("reset"), True),
        (ValueError("bad config"), False),
        (KeyError("problem"), False),
        (RuntimeError("stack expects each tensor to be equal size"), False),
        (AssertionError(), False),
        (None, False),
    ],
)
def test_only_infrastructure_failures_are_retried(exc, retried):
    assert is_infrastructure_failure(exc) is retried


def test_ephemeral_prefect_servers_of_killed_runs_are_reaped():
    """A SIGKILLed pidistill leaves the ephemeral Prefect server it started running; the next
    pidistill stops it (and leaves alone the server of a live pidistill)."""
    from cli.env import reap_orphaned_prefect_servers

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fake = [sys.executable, "-c", "import time; time.sleep(60)"]
    orphan = subprocess.Popen(
        fake, env={**os.environ, "PREFECT__SERVER_EPHEMERAL": "1", "PIDISTILL_SERVER_OWNER": str(dead.pid)}
    )
    owned = subprocess.Popen(
        fake, env={**os.environ, "PREFECT__SERVER_EPHEMERAL": "1", "PIDISTILL_SERVER_OWNER": str(os.getpid())}
    )
    try:
        time.sleep(0.3)  # let both exec (their environment is readable from then on)
        assert reap_orphaned_prefect_servers() == [orphan.pid]
        assert orphan.wait(timeout=10) == -15 and owned.poll() is None
    finally:
        for p in (orphan, owned):
            p.kill()
            p.wait()
