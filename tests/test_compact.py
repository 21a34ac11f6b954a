"""Compaction (storage.compact): a completed run's shards become one file per table, and no reader
ever sees it half done. Real parquet, real DuckDB catalog, real `pidistill compact` processes
killed with SIGKILL at each step of the swap."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.catalog import query
from storage.compact import COMPACTED, compact_run, unfinished
from storage.lock import reading
from storage.schema import TABLES
from storage.writer import RunCompacted, shard_path, write_rows
from tasks.runs import RunFinal, RunInUse, compact_completed, is_compacted, run_lock
from tests.attempt_factory import make_attempt

REPO = Path(__file__).resolve().parent.parent
ROUND_KEYED = ("attempts", "sft_examples", "trainings", "evaluations", "stages")
NOW = datetime(2026, 12, 4, tzinfo=UTC)


def _run_row(run_id: str, status: str) -> dict:
    return {
        "run_id": run_id,
        "experiment": "demo",
        "config_json": "{}",
        "config_hash": "h",
        "code_version": "c",
        "data_hash": "d",
        "started_at": NOW,
        "finished_at": NOW,
        "status": status,
        "error": None,
        "smoke": False,
    }


def write_run_like_a_flow(home: Path, run_id: str, status: str = "completed", arms=("a", "b"), seeds=(0, 1)) -> int:
    """The files a 2-round run writes: attempts by stage and retry level, SFT examples, evaluations,
    trainings and one `stages` row per stage; returns the number of shards."""
    files = 0
    for arm in arms:
        for seed in seeds:
            for rnd in (0, 1, 2):
                k = {"run_id": run_id, "arm": arm, "seed": seed, "round": rnd}
                evals = [
                    make_attempt(**k, phase="eval", problem_id=f"q{i}", attempt_id=f"{run_id}{arm}{seed}{rnd}e{i}")
                    for i in range(20)
                ]
                write_rows(shard_path(home, run_id, "attempts", arm, seed, rnd, "eval"), evals, "attempts")
                ev = [{**k, "problem_id": f"q{i}", "model_ref": "m", "n": 4, "n_pass": i % 5} for i in range(20)]
                write_rows(shard_path(home, run_id, "evaluations", arm, seed, rnd, "eval"), ev, "evaluations")
                files += 2
                if rnd == 0:
                    continue
                for level in (0, 1, 2):
                    tries = [
                        make_attempt(
                            **k,
                            problem_id=f"p{i}",
                            attempt_id=f"{run_id}{arm}{seed}{rnd}t{level}-{i}",
                            attempt_idx=level,
                            passed=bool((i + level) % 3 == 0),
                            completion=f"answer {i} at level {level}",
                            completion_token_ids=(i, level, 2),
                            sampler_seed=level,
                        )
                        for i in range(30 - 10 * level)
                    ]
                    write_rows(
                        shard_path(home, run_id, "attempts", arm, seed, rnd, f"sample-{level}"), tries, "attempts"
                    )
                    stage = {
                        **k,
                        "stage": "sample",
                        "attempt_idx": level,
                        "model_ref": "m",
                        "n_items": len(tries),
                        "n_prompt_tokens": 10,
                        "n_completion_tokens": 20,
                        "verifier_calls": 0,
                        "seconds": 1.0,
                        "cpu_seconds": 1.0,
                        "started_at": NOW,
                        "shard": None,
                        "worker": "w",
                    }
                    write_rows(shard_path(home, run_id, "stages", arm, seed, rnd, f"sample-{level}"), [stage], "stages")
                    files += 2
                sft = [
                    {
                        **k,
                        "problem_id": f"p{i}",
                        "attempt_id": f"{run_id}{arm}{seed}{rnd}t0-{i}",
                        "prompt": "q",
                        "completion": "c",
                    }
                    for i in range(0, 30, 3)
                ]
                write_rows(shard_path(home, run_id, "sft_examples", arm, seed, rnd, "filter"), sft, "sft_examples")
                tr = {
                    **k,
                    "method": "sft",
                    "init_model_ref": "m",
                    "n_examples": len(sft),
                    "steps": 3,
                    "lr": 1e-5,
                    "final_loss": 0.5,
                    "checkpoint": "c",
                    "seconds": 2.0,
                }
                write_rows(shard_path(home, run_id, "trainings", arm, seed, rnd, "train"), [tr], "trainings")
                files += 2
    write_rows(home / run_id / "runs" / "run.parquet", [_run_row(run_id, status)], "runs")
    return files


def snapshot(home: Path) -> dict[str, str]:
    """Every row of every table, in a canonical order, as text (NULLs compare equal): what must not change."""
    return {t: query(f"select * from {t} order by all", home=home).to_csv(index=False) for t in TABLES}


def parquet_files(run_dir: Path) -> dict[str, list[str]]:
    return {t: sorted(str(p.relative_to(run_dir / t)) for p in (run_dir / t).rglob("*.parquet")) for t in ROUND_KEYED}


def test_compaction_keeps_every_row_and_leaves_one_file_per_table(pidistill_home: Path):
    shards = write_run_like_a_flow(pidistill_home, "r1")
    write_run_like_a_flow(pidistill_home, "r2")
    before = snapshot(pidistill_home)
    assert sum(len(v) for v in parquet_files(pidistill_home / "r1").values()) == shards

    done = compact_completed("r1")

    assert {c.table for c in done} == set(ROUND_KEYED)
    assert sum(c.files for c in done) == shards and sum(c.rows for c in done) > 1000
    assert parquet_files(pidistill_home / "r1") == {t: [COMPACTED] for t in ROUND_KEYED}
    assert os.listdir(pidistill_home / "r1" / "runs") == ["run.parquet"]  # one file per run: left alone
    assert snapshot(pidistill_home) == before  # r1 compacted, r2 not: the same rows, none twice
    assert is_compacted("r1") and not is_compacted("r2")
    assert compact_completed("r1") == []  # already done: nothing to do
    assert not list(pidistill_home.rglob("*.tmp-*"))

    # Row groups follow the shards' path order, so a filter on arm skips the other arm's groups.
    meta = pq.ParquetFile(pidistill_home / "r1" / "attempts" / COMPACTED).metadata
    assert meta.num_rows == len(query("select 1 from attempts where run_id = 'r1'", home=pidistill_home))


def test_only_a_completed_run_no_one_writes_is_compacted(pidistill_home: Path):
    write_run_like_a_flow(pidistill_home, "running", status="running")
    write_run_like_a_flow(pidistill_home, "failed", status="failed")
    write_run_like_a_flow(pidistill_home, "busy")
    with pytest.raises(ValueError, match="run running is running: only completed runs"):
        compact_completed("running")
    with pytest.raises(ValueError, match="run failed is failed"):
        compact_completed("failed")  # it may be resumed, and its resume writes shards
    with pytest.raises(ValueError, match="no run 'nope'"):
        compact_completed("nope")
    assert not (pidistill_home / "nope").exists()  # nothing written for a run that is not there
    with run_lock("busy"), pytest.raises(RunInUse):
        compact_completed("busy")
    assert not any(is_compacted(r) for r in ("running", "failed", "busy"))


def test_a_compacted_run_takes_no_more_shards_and_cannot_be_resumed(pidistill_home: Path):
    from experiments.config import load_config
    from tasks.runs import run_lifecycle

    write_run_like_a_flow(pidistill_home, "r1")
    compact_completed("r1")
    with pytest.raises(RunCompacted, match="run r1 is compacted"):
        shard_path(pidistill_home, "r1", "attempts", "a", 0, 1, "sample-0")
    cfg = load_config("demo", ["rounds=1"])
    (pidistill_home / "r1" / "runs" / "run.parquet").unlink()
    from tasks.runs import write_run

    write_run(cfg, "r1", "completed", NOW)
    with pytest.raises(RunFinal, match="r1 completed and its outputs are compacted"):
        with run_lifecycle(cfg, "r1"):
            pass


def test_old_shards_without_a_new_column_compact_with_nulls_there(pidistill_home: Path):
    write_run_like_a_flow(pidistill_home, "r1", arms=("a",), seeds=(0,))
    old = shard_path(pidistill_home, "r1", "attempts", "a", 0, 1, "sample-0")
    later = ["flags", "fail_reason", "prompt_token_sha", "completion_token_ids", "sampler_seed", "policy_digest"]
    pq.write_table(pq.read_table(old).drop_columns(later), old)  # as older code wrote it
    before = snapshot(pidistill_home)
    compact_completed("r1")
    assert snapshot(pidistill_home) == before
    assert pq.read_schema(pidistill_home / "r1" / "attempts" / COMPACTED).equals(TABLES["attempts"].remove_metadata())


def test_a_reader_holds_the_swap_off_and_a_stuck_one_leaves_the_table_as_it_was(pidistill_home: Path):
    from storage.compact import CompactionError

    write_run_like_a_flow(pidistill_home, "r1", arms=("a",), seeds=(0,))
    query("select 1", home=pidistill_home)  # the catalog (and its lock file) exist
    before = parquet_files(pidistill_home / "r1")
    with reading(pidistill_home):
        with pytest.raises(CompactionError, match="queries held .*catalog.lock for 0 s; r1/attempts left as shards"):
            compact_run(pidistill_home, "r1", wait=0.2)
    assert parquet_files(pidistill_home / "r1") == before
    assert not list(pidistill_home.rglob("*.tmp-*"))  # the staged file went with the refusal


class Counter(threading.Thread):
    """An analyst querying throughout: every answer must be the one before compaction, exactly."""

    SQL = {
        "attempts": "select count(*), count(distinct attempt_id), sum(passed::int) from attempts",
        "stages": "select count(*), sum(n_items) from stages",
        "evaluations": "select count(*), sum(n_pass) from evaluations",
        "by arm": "select arm, round, count(*) from attempts group by all order by all",
    }

    def __init__(self, home: Path) -> None:
        super().__init__(daemon=True)
        self.home, self.stop, self.errors, self.answers = home, threading.Event(), [], 0
        self.expected = {k: self.ask(sql) for k, sql in self.SQL.items()}

    def ask(self, sql: str) -> list:
        return query(sql, home=self.home).values.tolist()

    def run(self) -> None:
        while not self.stop.is_set():
            for k, sql in self.SQL.items():
                try:
                    got = self.ask(sql)
                except Exception as exc:
                    self.errors.append(f"{k}: {type(exc).__name__}: {exc}")
                    continue
                self.answers += 1
                if got != self.expected[k]:
                    self.errors.append(f"{k}: {got} != {self.expected[k]}")


@pytest.mark.slow
def test_compaction_killed_at_each_step_while_a_reader_queries_throughout(pidistill_home: Path):
    """`pidistill compact` SIGKILLed after staging a table and after swapping one, then run again:
    the reader's answers never change, no query fails, nothing is left behind."""
    for r in ("r1", "r2", "r3"):
        write_run_like_a_flow(pidistill_home, r)
    before = snapshot(pidistill_home)
    env = {**os.environ, "PIDISTILL_HOME": str(pidistill_home)}
    reader = Counter(pidistill_home)
    reader.start()
    left = {}
    try:
        for point in ("compact:staged#1", "compact:swapped#2", "compact:staged#2"):
            out = subprocess.run(
                [sys.executable, "-m", "cli.main", "compact", "r1", "r2"],
                env={**env, "PIDISTILL_FAULT_KILL_AT": point},
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            assert out.returncode == -9, f"expected a SIGKILL at {point}: {out.stdout}{out.stderr}"
            left[point] = sorted(p.name for p in pidistill_home.rglob("*.tmp-compact-*"))
        out = subprocess.run(
            [sys.executable, "-m", "cli.main", "compact", "--all"], env=env, cwd=REPO, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
    finally:
        reader.stop.set()
        reader.join(timeout=60)

    assert reader.errors == [] and reader.answers > 20, (reader.answers, reader.errors[:5])
    assert left["compact:staged#1"] == ["attempts.tmp-compact-" + left["compact:staged#1"][0].split("compact-")[1]]
    assert left["compact:swapped#2"]  # the old shards of a swapped table, under the staging name
    assert not any(unfinished(pidistill_home / r) for r in ("r1", "r2", "r3"))
    assert "r1: 0 shards -> 0 files" not in out.stdout and "r3: " in out.stdout and " shards -> 5 files" in out.stdout
    assert snapshot(pidistill_home) == before
    assert not list(pidistill_home.rglob("*.tmp-*"))


def test_cli_compact_says_what_it_did_and_what_it_refused(pidistill_home: Path, capsys):
    from cli.main import main

    shards = write_run_like_a_flow(pidistill_home, "r1")
    write_run_like_a_flow(pidistill_home, "r2", status="failed")
    assert main(["compact", "r1", "r2"]) == 1
    out, err = capsys.readouterr()
    assert f"r1: {shards} shards -> 5 files" in out
    assert "run r2 is failed: only completed runs are compacted" in err
    assert main(["compact", "--all"]) == 0
    assert "nothing to compact" in capsys.readouterr().err
    assert main(["compact"]) == 2


def test_a_table_of_mixed_types_is_refused_and_left_as_it_was(pidistill_home: Path):
    from storage.compact import CompactionError

    write_run_like_a_flow(pidistill_home, "r1", arms=("a",), seeds=(0,))
    odd = shard_path(pidistill_home, "r1", "trainings", "a", 0, 1, "train")
    t = pq.read_table(odd)
    pq.write_table(t.set_column(t.schema.get_field_index("steps"), "steps", pa.array(["three"])), odd)
    with pytest.raises(CompactionError, match="r1/trainings: its shards disagree on a column's type"):
        compact_completed("r1")
    assert (odd.exists(), (pidistill_home / "r1" / "trainings" / COMPACTED).exists()) == (True, False)
    assert not list(pidistill_home.rglob("*.tmp-*"))
