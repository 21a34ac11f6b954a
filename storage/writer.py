"""Atomic parquet shards under PIDISTILL_HOME.

Layout (one file per run, table, arm, seed, round, stage and shard):

    $PIDISTILL_HOME/<run_id>/<table>/arm=<arm>/seed=<seed>/round=<round>/<stage>-<shard>.parquet

A shard is written to `<name>.parquet.tmp-<pid>-<rand>` in the same folder and
`os.replace`d into place, so a reader sees the whole file or nothing and a
crash leaves only a temp file (never matched by `*.parquet`, swept by
`sweep_temp_files`). Nothing here knows about flows, models or domains.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.compact import COMPACTED
from storage.lock import LockTimeout, exclusive
from storage.schema import TABLES, Attempt, arrow_schema

TMP_MARK = ".tmp-"


class RunCompacted(RuntimeError):
    """A shard was about to be written into a run whose tables were compacted (storage.compact)."""


def shard_path(
    home: Path, run_id: str, table: str, arm: str, seed: int, round: int, stage: str, shard: int = 0
) -> Path:
    if table not in TABLES and not table.startswith("_"):
        raise ValueError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
    if (home / run_id / table / COMPACTED).exists():
        # A shard beside the compacted file would be counted with it; a compacted run is final.
        raise RunCompacted(f"run {run_id} is compacted ({table} is one file): it takes no more shards")
    return home / run_id / table / f"arm={arm}" / f"seed={seed}" / f"round={round}" / f"{stage}-{shard}.parquet"


def to_arrow(rows: Iterable[Mapping[str, Any] | Attempt] | pa.Table, schema: pa.Schema) -> pa.Table:
    """Rows -> a table with exactly `schema`. Dicts: a missing or extra column is an error. Typed rows
    (`Attempt`s): their type's schema must be `schema`; they go to arrow column by column."""
    if isinstance(rows, pa.Table):
        return rows.select(schema.names).cast(schema)
    rows = list(rows)
    typed = [r for r in rows if isinstance(r, Attempt)]
    if typed:
        if len(typed) != len(rows) or arrow_schema(Attempt) != schema:
            raise ValueError("rows of type Attempt (or mixed with dicts) do not fit this table's schema")
        return pa.Table.from_pydict({n: [getattr(r, n) for r in typed] for n in schema.names}, schema=schema)
    dicts = [r for r in rows if isinstance(r, Mapping)]
    if len(dicts) != len(rows):
        odd = next(r for r in rows if not isinstance(r, Mapping))
        raise ValueError(f"rows must be dicts or Attempts, got a {type(odd).__name__}")
    for i, row in enumerate(dicts):
        missing = set(schema.names) - row.keys()
        extra = row.keys() - set(schema.names)
        if missing or extra:
            raise ValueError(f"row {i}: missing columns {sorted(missing)}, unexpected {sorted(extra)}")
    return pa.Table.from_pylist(dicts, schema=schema)


def write_atomic(path: Path, write: Callable[[Path], object], readers: Path | None = None) -> Path:
    """`write(tmp)` to a temp name in `path`'s folder, then `os.replace` it to `path`: readers see the
    whole file or nothing, and a killed writer leaves only a temp file (see `sweep_temp_files`).

    `readers`: the home whose queries may be reading `path` (a run's `runs` row, rewritten as the run goes;
    a shard a resumed stage writes again): replacing an existing file then waits for running queries
    (`storage.lock`), up to REWRITE_WAIT seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        write(tmp)
        if readers is None or not path.exists():  # a new path is in no query's listing until it is whole
            os.replace(tmp, path)
        else:
            _replace_between_queries(tmp, path, readers)
    finally:
        tmp.unlink(missing_ok=True)
    return path


REWRITE_WAIT = 30.0


def _replace_between_queries(tmp: Path, path: Path, home: Path) -> None:
    try:
        with exclusive(home, REWRITE_WAIT):
            os.replace(tmp, path)
    except LockTimeout:
        # A query has run for REWRITE_WAIT seconds: the run goes on; that query may fail and be rerun.
        os.replace(tmp, path)


@contextmanager
def folder_atomic(final: Path, *, replace: bool = True) -> Iterator[Path]:
    """A temp folder beside `final` to fill (a model being saved); on success it becomes `final` in one
    rename, so a reader never sees a half-saved model, and a killed writer leaves only
    `<name>.tmp-<pid>` (swept on resume). `replace=False`: a `final` another process finished first
    is kept (concurrent builders of the same cached model)."""
    work = final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        yield work
        if replace:
            shutil.rmtree(final, ignore_errors=True)  # a leftover of a killed attempt at the same folder
        try:
            os.rename(work, final)
        except OSError:
            if replace or not final.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_parquet(path: Path, table: pa.Table, readers: Path | None = None) -> Path:
    """Write `table` to `path` atomically (temp name in the same folder, then os.replace; see write_atomic)."""
    return write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"), readers)


def write_rows(
    path: Path, rows: Iterable[Mapping[str, Any] | Attempt] | pa.Table, table: str, readers: Path | None = None
) -> Path:
    """Validate rows (dicts, or `Attempt`s for `attempts`) against the named table's schema and write them
    atomically. `readers`: the home, for a file rewritten in place (see write_atomic)."""
    return write_parquet(path, to_arrow(rows, TABLES[table]), readers)


def sweep_temp_files(root: Path) -> list[Path]:
    """Delete what a killed writer left behind under `root`: temp files (`<name>.tmp-<pid>-<rand>`)
    and temp folders (a checkpoint being saved, `<name>.tmp-<pid>`); returns what was removed.
    Only for a run no live process is writing (see `tasks.runs.run_lock`)."""
    removed = []
    if root.exists():
        for p in sorted(root.rglob(f"*{TMP_MARK}*"), key=lambda p: len(p.parts)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists() or p.is_symlink():
                p.unlink(missing_ok=True)
            else:
                continue  # inside a temp folder removed above
            removed.append(p)
    return removed
