"""Compaction: a finished run's shards of each table become one parquet file, swapped in whole.

A run writes one file per (table, arm, seed, round, stage, shard): thousands of small files, and
a catalog query's cost grows with the files it lists and opens, not with the rows. Once a run
has completed, nothing writes its round-keyed tables again, so each of them is rewritten as

    <home>/<run>/<table>/compacted.parquet        (was <home>/<run>/<table>/arm=*/seed=*/round=*/*.parquet)

rows in the shards' path order (arm, seed, round, stage), so the parquet statistics of each row
group let DuckDB skip the arms and rounds a query filters out.

Why readers never see half of it (no rows missing, none counted twice):

- The compacted file is built in a staging folder beside the table, `<table>.tmp-compact-<pid>-<rand>`,
  which the catalog's glob (`<home>/*/<table>/**/*.parquet`) does not match, and its row count is
  checked against the shards' before anything visible changes.
- The staging folder and the table's folder are then swapped with one `renameat2(RENAME_EXCHANGE)`:
  a path lookup sees the old tree or the new one, never neither, never both. The old tree, now
  under the staging name, is deleted afterwards.
- A rename is atomic for one lookup, but a reader's glob walks the tree in several (list the
  table's folder, then each arm folder, ...), and one walk straddling the swap would list a mix.
  So the swap happens under an exclusive lock on `<home>/catalog.lock` that every reader through
  `storage.catalog` holds shared for the length of its query (`storage/lock.py`). Readers wait for a swap
  (milliseconds); the swap waits for running queries, up to `wait` seconds, then gives up and
  leaves the table as it was.
- A compactor killed at any point leaves the old tree or the new one in place and at most a
  staging folder, which carries the temp mark `sweep_temp_files` removes when the run is next
  touched.

A reader that opens `catalog.duckdb` with its own DuckDB (not through `storage.catalog`) takes no
lock: a query that overlaps a swap may fail with a "No such file" error (rerun it).
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storage.lock import LockTimeout, exclusive

COMPACTED = "compacted.parquet"
# Rows buffered before a row group is written: big enough that a scan reads few groups, small
# enough that a run's largest table streams through in bounded memory.
ROW_GROUP_ROWS = 64_000


class CompactionError(RuntimeError):
    """A table could not be compacted; it is left exactly as it was."""


@dataclass(frozen=True)
class TableCompaction:
    table: str
    files: int  # shards before
    rows: int
    bytes_before: int
    bytes_after: int


def compacted(run_dir: Path, table: str) -> bool:
    """Whether `<run>/<table>` holds a compacted file (and so takes no more shards)."""
    return (run_dir / table / COMPACTED).is_file()


def shard_files(table_dir: Path) -> list[Path]:
    """The shards of one run's table, in path order; [] for a table written as one file per run
    (`runs`, `arm_results`: rewritten in place, nothing to compact) or one already compacted."""
    files = sorted(p for p in table_dir.glob("*/**/*.parquet") if p.is_file())
    return [] if (table_dir / COMPACTED).exists() else files


def unfinished(run_dir: Path) -> bool:
    """Whether a run has shards left to compact, or the staging folder of a killed compaction."""
    from storage.schema import TABLES
    from storage.writer import TMP_MARK

    return any(shard_files(run_dir / t) for t in TABLES) or any(run_dir.glob(f"*{TMP_MARK}compact-*"))


# ----------------------------------------------------------------------------- the swap

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> None:
    """Swap two paths in one step (Linux `renameat2(RENAME_EXCHANGE)`): any lookup finds one or the other."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        renameat2 = libc.renameat2
    except AttributeError:
        raise CompactionError("compaction needs renameat2 (Linux, glibc 2.28+); left uncompacted") from None
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        why = " (this filesystem cannot swap folders)" if e in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP) else ""
        raise CompactionError(f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(e)}{why}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- one table


def _merge(files: list[Path], out: Path, label: str) -> int:
    """Stream `files` into one parquet file at `out` (row groups of about ROW_GROUP_ROWS rows); returns
    the rows written. Shards written by older code may lack newer columns: the file gets the union of
    the shards' schemas and such rows read NULL there, as the catalog's `union_by_name` reads them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise CompactionError(f"{label}: its shards disagree on a column's type ({exc}); left as shards") from exc
    schema = schema.remove_metadata()
    rows, buffered = 0, 0
    pending: list[pa.Table] = []
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:

        def flush() -> None:
            nonlocal pending, buffered
            if pending:
                writer.write_table(pa.concat_tables(pending).combine_chunks(), row_group_size=max(buffered, 1))
                pending, buffered = [], 0

        for f in files:
            t = pq.read_table(f)
            for name in schema.names:
                if name not in t.column_names:
                    t = t.append_column(name, pa.nulls(t.num_rows, schema.field(name).type))
            t = t.select(schema.names).cast(schema)
            pending.append(t)
            buffered += t.num_rows
            rows += t.num_rows
            if buffered >= ROW_GROUP_ROWS:
                flush()
        flush()
    return rows


def compact_table(
    home: Path, run_id: str, table: str, *, wait: float = 120.0, step: Callable[[str], None] | None = None
) -> TableCompaction | None:
    """Compact one run's table (see the module docstring); None when there is nothing to compact.
    `step(name)` is called at "compact:staged" and "compact:swapped" (the crash tests' kill points)."""
    import pyarrow.parquet as pq

    from storage.writer import TMP_MARK

    table_dir = home / run_id / table
    files = shard_files(table_dir)
    if not files:
        return None
    expected = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    before = sum(f.stat().st_size for f in files)
    staging = table_dir.with_name(f"{table}{TMP_MARK}compact-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        out = staging / COMPACTED
        rows = _merge(files, out, f"{run_id}/{table}")
        if rows != expected or pq.ParquetFile(out).metadata.num_rows != expected:
            raise CompactionError(f"{run_id}/{table}: compacted {rows} rows, the shards hold {expected}")
        _fsync(out)
        _fsync(staging)
        if step:
            step("compact:staged")
        try:
            with exclusive(home, wait):
                exchange(staging, table_dir)
        except LockTimeout as exc:
            raise CompactionError(f"{exc}; {run_id}/{table} left as shards") from None
        _fsync(table_dir.parent)
        if step:
            step("compact:swapped")
        return TableCompaction(table, len(files), rows, before, (table_dir / COMPACTED).stat().st_size)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the new file before a swap, the old shards after


def compact_run(
    home: Path, run_id: str, *, wait: float = 120.0, step: Callable[[str], None] | None = None
) -> list[TableCompaction]:
    """Compact every round-keyed table of a run no process writes any more (the caller holds the
    run's lock and has checked it completed: a failed run may be resumed, and a resumed stage
    writes shards). Tables already compacted are skipped, so a killed compaction is finished by
    calling this again."""
    from storage.schema import TABLES

    done = []
    for table in TABLES:
        result = compact_table(home, run_id, table, wait=wait, step=step)
        if result:
            done.append(result)
    return done
