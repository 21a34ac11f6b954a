"""Parquet shards are written atomically; the DuckDB catalog is views only and sees new shards at once."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from attempt_factory import make_attempt

from domains import Verdict
from storage import writer
from storage.catalog import CATALOG_NAME, connect, ensure_catalog, query
from storage.schema import ATTEMPTS, TABLES, Attempt
from storage.writer import shard_path, sweep_temp_files, write_rows


def _eval_rows(run_id: str, n: int, arm: str = "a") -> list[dict]:
    return [
        {
            "run_id": run_id,
            "arm": arm,
            "seed": 0,
            "round": 1,
            "problem_id": f"p{i}",
            "model_ref": "m",
            "n": 1,
            "n_pass": i % 2,
        }
        for i in range(n)
    ]


def test_fresh_home_answers_queries_on_every_table(pidistill_home: Path):
    for table in TABLES:
        assert query(f"select count(*) as n from {table}").n.tolist() == [0]
    assert (pidistill_home / CATALOG_NAME).exists()


def test_new_shards_are_visible_without_touching_the_catalog(pidistill_home: Path):
    ensure_catalog()
    mtime = (pidistill_home / CATALOG_NAME).stat().st_mtime_ns
    write_rows(shard_path(pidistill_home, "r1", "evaluations", "a", 0, 1, "eval"), _eval_rows("r1", 10), "evaluations")
    write_rows(
        shard_path(pidistill_home, "r2", "evaluations", "b", 0, 1, "eval"), _eval_rows("r2", 4, "b"), "evaluations"
    )
    df = query("select run_id, count(*) n, sum(n_pass) p from evaluations group by all order by all")
    assert df.values.tolist() == [["r1", 10, 5], ["r2", 4, 2]]
    assert (pidistill_home / CATALOG_NAME).stat().st_mtime_ns == mtime


def test_layout_is_run_table_arm_seed_round_stage(pidistill_home: Path):
    p = shard_path(pidistill_home, "run", "attempts", "rft", 2, 3, "train", 1)
    assert p.relative_to(pidistill_home).as_posix() == "run/attempts/arm=rft/seed=2/round=3/train-1.parquet"
    with pytest.raises(ValueError, match="unknown table"):
        shard_path(pidistill_home, "run", "atempts", "rft", 2, 3, "train")


def test_rows_must_match_the_schema(tmp_path: Path):
    row = _eval_rows("r", 1)[0]
    with pytest.raises(ValueError, match=r"missing columns \['n_pass'\]"):
        write_rows(tmp_path / "x.parquet", [{k: v for k, v in row.items() if k != "n_pass"}], "evaluations")
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        write_rows(tmp_path / "x.parquet", [{**row, "extra": 1}], "evaluations")
    assert not list(tmp_path.iterdir())


# The attempts table as it was declared before `Attempt` (parquet of every earlier run has it): the schema
# derived from `Attempt` must stay exactly this (names, order, types), or old shards and views break.
ATTEMPTS_AS_DECLARED = pa.schema(
    [
        ("run_id", pa.string()),
        ("arm", pa.string()),
        ("seed", pa.int32()),
        ("round", pa.int32()),
        ("phase", pa.string()),
        ("problem_id", pa.string()),
        ("attempt_id", pa.string()),
        ("attempt_idx", pa.int32()),
        ("sample_idx", pa.int32()),
        ("parent_id", pa.string()),
        ("model_ref", pa.string()),
        ("sampler", pa.string()),
        ("temperature", pa.float64()),
        ("pi_kind", pa.string()),
        ("pi_text", pa.string()),
        ("prompt", pa.string()),
        ("teacher_prompt", pa.string()),
        ("completion", pa.string()),
        ("status", pa.string()),
        ("passed", pa.bool_()),
        ("score", pa.float64()),
        ("feedback", pa.string()),
        ("n_prompt_tokens", pa.int32()),
        ("n_completion_tokens", pa.int32()),
        ("accepted", pa.bool_()),
        ("reject_reason", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("fail_reason", pa.string()),  # added after the first runs: last, so older files read it as NULL
        ("flags", pa.string()),  # added after fail_reason, for the same reason
        ("copies_pi", pa.bool_()),  # added after flags (the PI-copy audit), for the same reason
        ("pi_overlap", pa.float64()),
        # provenance (models.sampling.base), added after flags
        ("prompt_token_sha", pa.string()),
        ("completion_token_ids", pa.list_(pa.int32())),
        ("completion_token_sha", pa.string()),
        ("sampler_seed", pa.int64()),
        ("sample_key", pa.string()),
        ("policy_digest", pa.string()),
    ]
)
PROVENANCE = ATTEMPTS_AS_DECLARED.names[-6:]


def test_attempts_schema_derived_from_attempt_is_the_declared_one():
    assert ATTEMPTS.equals(ATTEMPTS_AS_DECLARED, check_metadata=True)
    assert TABLES["attempts"] is ATTEMPTS and all(f.nullable for f in ATTEMPTS)
    assert list(Attempt.__slots__) == ATTEMPTS.names


def test_an_attempt_gets_its_verdict_and_decision_as_copies():
    sampled = make_attempt(completion=" 2*7=15. #### 15")
    assert (sampled.status, sampled.passed, sampled.accepted, sampled.reject_reason) == (None, None, None, None)
    verified = sampled.with_verdict(Verdict("fail", False, 0.0, "final answer 15 is wrong"))
    assert (verified.status, verified.passed, verified.score, verified.feedback) == (
        "fail",
        False,
        0.0,
        "final answer 15 is wrong",
    )
    assert sampled.status is None  # the sampled attempt is unchanged
    assert (verified.decided("failed").accepted, verified.decided("failed").reject_reason) == (False, "failed")
    assert (verified.decided(None).accepted, verified.decided(None).reject_reason) == (True, None)
    with pytest.raises(AttributeError):
        verified.passed = True  # frozen


def test_attempts_write_as_their_rows_and_pickle_whole(pidistill_home: Path):
    import pickle

    verdict = Verdict("pass", True, 1.0)
    attempts = [make_attempt(attempt_id=f"p-{i}", sample_idx=i).with_verdict(verdict).decided(None) for i in range(3)]
    typed = write_rows(shard_path(pidistill_home, "r", "attempts", "a", 0, 1, "train"), attempts, "attempts")
    as_dicts = write_rows(pidistill_home / "dicts.parquet", [a.to_row() for a in attempts], "attempts")
    assert pq.read_table(typed).equals(pq.read_table(as_dicts))
    assert pq.read_table(typed).schema.equals(ATTEMPTS_AS_DECLARED)
    assert query("select attempt_id, sample_idx, passed, accepted from attempts order by 1").values.tolist() == [
        ["p-0", 0, True, True],
        ["p-1", 1, True, True],
        ["p-2", 2, True, True],
    ]
    # stage return values are pickled to checkpoints (tasks.resume)
    assert pickle.loads(pickle.dumps(attempts, protocol=pickle.HIGHEST_PROTOCOL)) == attempts
    # a checkpoint pickled before the provenance columns: a resumed run reads them as NULL
    older = Attempt.__new__(Attempt)
    older.__setstate__(attempts[0].__getstate__()[: -len(PROVENANCE)])  # type: ignore[attr-defined]
    assert older == attempts[0] and older.to_row()["completion_token_ids"] is None
    with pytest.raises(ValueError, match="do not fit"):
        write_rows(pidistill_home / "x.parquet", attempts, "sft_examples")


def test_a_crash_mid_write_leaves_no_shard_and_no_temp(tmp_path: Path, monkeypatch):
    target = tmp_path / "t" / "eval-0.parquet"
    real = pq.write_table

    def dies_halfway(table, where, **kw):
        real(table.slice(0, 1), where, **kw)  # something is on disk under the temp name...
        raise OSError("disk full")

    monkeypatch.setattr(writer.pq, "write_table", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        write_rows(target, _eval_rows("r", 5), "evaluations")
    assert list(target.parent.iterdir()) == []  # ...but neither it nor a target exists


def test_overwrite_is_whole(tmp_path: Path):
    target = tmp_path / "eval-0.parquet"
    write_rows(target, _eval_rows("r", 5), "evaluations")
    write_rows(target, _eval_rows("r", 3), "evaluations")
    assert pq.read_table(target).num_rows == 3


def test_sweep_removes_orphan_temp_files(tmp_path: Path):
    (tmp_path / "a").mkdir()
    orphan = tmp_path / "a" / f"eval-0.parquet{writer.TMP_MARK}123-abcd"
    orphan.write_bytes(b"PAR1 half")
    keep = write_rows(tmp_path / "a" / "eval-1.parquet", _eval_rows("r", 1), "evaluations")
    assert sweep_temp_files(tmp_path) == [orphan]
    assert keep.exists() and not orphan.exists()


def test_catalog_is_read_only_for_readers(pidistill_home: Path):
    with connect() as con:
        with pytest.raises(duckdb.Error):
            con.execute("create table x (a int)")


def test_catalog_rebuilds_when_the_home_moves(tmp_path: Path, monkeypatch):
    old = tmp_path / "old"
    monkeypatch.setenv("PIDISTILL_HOME", str(old))
    write_rows(shard_path(old, "r1", "evaluations", "a", 0, 1, "eval"), _eval_rows("r1", 2), "evaluations")
    assert query("select count(*) n from evaluations").n.tolist() == [2]
    new = tmp_path / "new"
    old.rename(new)
    monkeypatch.setenv("PIDISTILL_HOME", str(new))
    assert query("select count(*) n from evaluations").n.tolist() == [2]
    assert query("select home from _catalog").home.tolist() == [str(new)]


def test_new_columns_read_as_null_in_old_shards(pidistill_home: Path):
    """union_by_name: a column a later version adds does not break older runs."""
    import pyarrow as pa

    old = pa.table(
        {
            "run_id": ["old"],
            "arm": ["a"],
            "seed": pa.array([0], pa.int32()),
            "round": pa.array([1], pa.int32()),
            "problem_id": ["p"],
            "n": pa.array([1], pa.int32()),
            "n_pass": pa.array([1], pa.int32()),
        }
    )  # no model_ref column
    writer.write_parquet(shard_path(pidistill_home, "old", "evaluations", "a", 0, 1, "eval"), old)
    df = query("select run_id, model_ref from evaluations")
    assert df.run_id.tolist() == ["old"] and df.model_ref.isna().all()


def test_reader_never_sees_a_partial_shard_while_a_writer_writes(pidistill_home: Path):
    ensure_catalog()
    errors: list[Exception] = []
    stop = threading.Event()

    def read_loop():
        while not stop.is_set():
            try:
                with duckdb.connect(str(pidistill_home / CATALOG_NAME), read_only=True) as con:
                    n = con.sql("select count(*) from evaluations").fetchall()[0][0]
                    assert n % 50 == 0, n  # whole shards only
            except Exception as exc:
                errors.append(exc)
                return

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(40):
            path = shard_path(pidistill_home, f"run{i % 4}", "evaluations", "a", i, 1, "eval")
            write_rows(path, _eval_rows(f"run{i % 4}", 50), "evaluations")
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert query("select count(*) n from evaluations").n.tolist() == [40 * 50]


def test_runs_row_roundtrip(pidistill_home: Path):
    now = datetime.now(UTC)
    row = {
        "run_id": "r",
        "experiment": "e",
        "config_json": "{}",
        "config_hash": "h",
        "code_version": "c",
        "data_hash": "d",
        "started_at": now,
        "finished_at": None,
        "status": "running",
        "error": None,
        "smoke": False,
    }
    write_rows(pidistill_home / "r" / "runs" / "run.parquet", [row], "runs")
    write_rows(
        pidistill_home / "r" / "runs" / "run.parquet", [{**row, "status": "completed", "finished_at": now}], "runs"
    )
    assert query("select run_id, status from runs").values.tolist() == [["r", "completed"]]
    assert os.listdir(pidistill_home / "r" / "runs") == ["run.parquet"]


def test_every_column_of_every_table_and_view_says_what_it_means(pidistill_home: Path):
    """`duckdb_columns().comment` documents the catalog (from storage/docs.py); none is left blank."""
    from storage.catalog import VIEWS

    cols = query(
        "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE NOT internal AND table_name <> '_catalog'"
    )
    assert set(cols.table_name) == set(TABLES) | set(VIEWS)
    blank = cols[cols.comment.isna() | (cols.comment == "")]
    assert blank.empty, blank[["table_name", "column_name"]].to_string()
    views = query("SELECT view_name, comment FROM duckdb_views() WHERE NOT internal AND view_name <> '_catalog'")
    assert views.comment.notna().all() and len(views) == len(TABLES) + len(VIEWS)


def test_a_file_rewritten_in_place_is_never_read_half_old_half_new(pidistill_home: Path):
    """A run's `runs` row is rewritten as its status changes. DuckDB opens a file to bind its schema and again
    to scan it, so an `os.replace` between the two gave the old footer with the new bytes: measured here,
    10 of 22 queries failed ("TProtocolException: Invalid data") while the row was rewritten 400 times.
    With `readers=` the replace waits for running queries (storage.lock): none fails."""
    from storage.lock import LOCK_NAME

    def row(i: int) -> dict:
        return {
            "run_id": "r",
            "experiment": "e" * (i % 50),
            "config_json": "{" + "x" * (i * 37 % 3000) + "}",  # a file of another size each time
            "config_hash": "h",
            "code_version": "c",
            "data_hash": "d",
            "started_at": datetime.now(UTC),
            "finished_at": None,
            "status": "running",
            "error": None,
            "smoke": False,
        }

    path = pidistill_home / "r" / "runs" / "run.parquet"
    write_rows(path, [row(0)], "runs")
    query("select 1")
    assert (pidistill_home / LOCK_NAME).exists()
    errors, answers, stop = [], [0], threading.Event()

    def read_loop() -> None:
        while not stop.is_set():
            try:
                assert len(query("select * from runs")) == 1
                answers[0] += 1
            except Exception as exc:  # every failure is what this test counts
                errors.append(f"{type(exc).__name__}: {exc}")

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(1, 400):
            write_rows(path, [row(i)], "runs", readers=pidistill_home)
    finally:
        stop.set()
        reader.join()
    assert errors == [] and answers[0] > 10, (answers, errors[:3])


def _with_provenance(attempt_id: str, ids: tuple[int, ...], seed: int = 4_000_000_000, **fields) -> Attempt:
    from models.sampling.base import token_sha

    return make_attempt(
        attempt_id=attempt_id,
        n_completion_tokens=len(ids),
        prompt_token_sha=token_sha([1, 2, 3]),
        completion_token_ids=ids,
        completion_token_sha=token_sha(ids),
        sampler_seed=seed,  # an HF chunk seed is 32 bits unsigned: BIGINT
        sample_key="chunk 0 prompt 1 of 2 sample 0 of 1",
        policy_digest="0123456789abcdef",
        **fields,
    )


def test_provenance_columns_round_trip_through_parquet_and_sql(pidistill_home: Path):
    rows = [_with_provenance("p-0", (17, 4, 0, 2)), _with_provenance("p-1", ())]
    path = write_rows(shard_path(pidistill_home, "r", "attempts", "a", 0, 1, "train"), rows, "attempts")
    back = pq.read_table(path)
    assert back.schema.equals(ATTEMPTS_AS_DECLARED)
    assert back.column("completion_token_ids").to_pylist() == [[17, 4, 0, 2], []]
    df = query(
        "select attempt_id, len(completion_token_ids) n, sampler_seed, typeof(completion_token_ids) t, "
        "completion_token_sha = left(sha256(array_to_string(completion_token_ids, ':')), 16) sha_ok "
        "from attempts order by 1"
    )
    assert df.values.tolist() == [
        ["p-0", 4, 4_000_000_000, "INTEGER[]", True],
        ["p-1", 0, 4_000_000_000, "INTEGER[]", True],
    ]


def test_attempts_of_older_runs_read_provenance_as_null(pidistill_home: Path):
    """A run written before the provenance columns (its parquet lacks them) reads NULL there, beside a new one;
    list functions on the missing list column give NULL, not an error."""
    old = pa.Table.from_pylist([make_attempt(run_id="old", attempt_id="old-0").to_row()], schema=ATTEMPTS).drop_columns(
        PROVENANCE
    )
    writer.write_parquet(shard_path(pidistill_home, "old", "attempts", "a", 0, 1, "train"), old)
    write_rows(
        shard_path(pidistill_home, "new", "attempts", "a", 0, 1, "train"),
        [_with_provenance("new-0", (5,), run_id="new")],
        "attempts",
    )
    df = query("select run_id, sampler_seed, policy_digest, len(completion_token_ids) n from attempts order by run_id")
    assert df.run_id.tolist() == ["new", "old"]
    assert df.sampler_seed.tolist()[0] == 4_000_000_000 and df.n.tolist()[0] == 1
    assert df.iloc[1][["sampler_seed", "policy_digest", "n"]].isna().all()


def _md_tables(md: str) -> dict[str, list[tuple[str, str, str]]]:
    """docs/schema.md: each `### `name`` section's column rows as (column, type, meaning)."""
    import re

    parts = re.split(r"^### `(\w+)`\n", md, flags=re.M)
    return {
        name: [
            (c, t, m.replace("\\|", "|")) for c, t, m in re.findall(r"^\| `(\w+)` \| ([^|]+?) \| (.*) \|$", body, re.M)
        ]
        for name, body in zip(parts[1::2], parts[2::2])
    }


def test_schema_md_lists_every_column_as_the_catalog_describes_it(pidistill_home: Path):
    """docs/schema.md's tables are the catalog's columns, types and comments (storage/docs.py), in order:
    regenerate its rows with the query at its top after a schema change."""
    from storage.catalog import VIEWS

    md = _md_tables((Path(__file__).resolve().parent.parent / "docs" / "schema.md").read_text())
    cols = query(
        "SELECT table_name, column_name, data_type, comment FROM duckdb_columns() "
        "WHERE NOT internal AND table_name <> '_catalog'"
    )
    assert set(md) == set(TABLES) | set(VIEWS)
    for name, group in cols.groupby("table_name"):
        assert md[name] == list(zip(group.column_name, group.data_type, group.comment)), name
