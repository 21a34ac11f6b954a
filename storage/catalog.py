"""The DuckDB catalog: `$PIDISTILL_HOME/catalog.duckdb` holds views only.

Each table is a view over the parquet glob of every run, read with
`union_by_name` so older runs read new columns as NULL:

    CREATE VIEW attempts AS SELECT * FROM read_parquet('<home>/*/attempts/**/*.parquet', ...)

DuckDB re-binds a view on every query, so a shard written a second ago is
visible at once and the catalog never needs writing while runs go on. A
zero-row file per table under `<home>/_schema/` keeps the glob non-empty on a
fresh home. The catalog file itself is built in a temp file and
`os.replace`d; readers open it `read_only=True`, so any number of readers and
writers can share one home.

    >>> from storage.catalog import query
    >>> query("select arm, avg(passed::int) from attempts group by arm")
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from storage.home import home_dir
from storage.lock import LOCK_NAME, reading

if TYPE_CHECKING:
    import pandas as pd

CATALOG_NAME = "catalog.duckdb"
# Bump to force a rebuild without a code change; any change to the files below rebuilds anyway.
CATALOG_VERSION = 6
# What the catalog is made of: its views (here), the tables' columns (schema) and the comments (docs).
_SOURCES = ("catalog.py", "schema.py", "docs.py")


@functools.cache
def _version() -> str:
    """CATALOG_VERSION and a fingerprint of the sources the catalog is built from. Read from the files,
    not the imported modules: a current catalog is recognised without importing pyarrow or pandas,
    which is most of the time of a cold `pidistill sql`."""
    here = Path(__file__).parent
    digest = hashlib.sha256(b"".join((here / name).read_bytes() for name in _SOURCES)).hexdigest()
    return f"{CATALOG_VERSION}-{digest[:12]}"


def _schema_file(home: Path, table: str) -> Path:
    return home / "_schema" / table / "empty.parquet"


def _glob(home: Path, table: str) -> str:
    return str(home / "*" / table / "**" / "*.parquet")


def view_sql(home: Path) -> list[str]:
    """The CREATE VIEW statements of the catalog for `home`."""
    from storage.schema import TABLES

    home_literal = str(home).replace("'", "''")
    stmts = [
        f"CREATE VIEW _catalog AS SELECT '{home_literal}' AS home, '{_version()}' AS version",
    ]
    for table in TABLES:
        pattern = _glob(home, table).replace("'", "''")
        stmts.append(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', "
            "union_by_name = true, hive_partitioning = false)"
        )
    stmts += [COMPUTE_VIEW, SUMMARY_VIEW, NIGHTLY_VIEW]
    return stmts


def _comment_sql(con: duckdb.DuckDBPyConnection) -> list[str]:
    """COMMENT statements for every view and column `storage.docs` describes (`duckdb_columns().comment`)."""

    from storage.docs import TABLE_DOCS, column_doc

    def lit(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    stmts = [f"COMMENT ON VIEW {v} IS {lit(doc)}" for v, doc in TABLE_DOCS.items()]
    for view, column in con.sql("SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal").fetchall():
        doc = column_doc(view, column)
        if doc and view in TABLE_DOCS:
            stmts.append(f"COMMENT ON COLUMN {view}.{column} IS {lit(doc)}")
    return stmts


# One row per run and arm: the seed-style table, with lineage.
# pass@1 of (arm, seed, round) = passes / samples over the held-out problems; delta = the
# arm's last round minus round 0 (the base model) of the same seed, averaged over seeds.
# The interval and p-value are the report's (a bootstrap, not SQL): from `arm_results`, NULL until
# the run has reported (a run still going, or one that failed before its report).
SUMMARY_VIEW = """
CREATE VIEW summary AS
WITH per_seed AS (
    SELECT run_id, arm, seed, round, sum(n_pass)::DOUBLE / sum(n) AS pass1, count(*) AS problems
    FROM evaluations GROUP BY ALL
), last AS (
    SELECT run_id, arm, seed, max(round) AS round FROM per_seed GROUP BY ALL
), arms AS (
    SELECT f.run_id, f.arm,
           count(*)::INT AS seeds,
           max(f.round)::INT AS rounds,
           max(f.problems)::INT AS problems,
           avg(b.pass1) AS base_pass1,
           avg(f.pass1) AS final_pass1,
           100 * avg(f.pass1 - b.pass1) AS delta_pp
    FROM per_seed f
    JOIN last l USING (run_id, arm, seed, round)
    JOIN per_seed b ON b.run_id = f.run_id AND b.arm = f.arm AND b.seed = f.seed AND b.round = 0
    GROUP BY f.run_id, f.arm
)
SELECT r.experiment, a.*, x.ci_low_pp, x.ci_high_pp, x.p_value,
       x.reference_arm, x.vs_reference_pp, x.vs_reference_ci_low_pp, x.vs_reference_ci_high_pp,
       coalesce(r.smoke, false) AS smoke, r.config_hash, r.code_version, r.data_hash, r.status
FROM arms a LEFT JOIN runs r USING (run_id) LEFT JOIN arm_results x USING (run_id, arm)
"""


# One row per nightly run x preset x arm: this night's Δpp vs base next to the previous night's, for
# the same experiment, config hash and arm (so a smoke-scale night is only compared with smoke-scale
# nights, and a changed preset starts a new series). The change is flagged when it lies outside the 95 %
# interval of a difference of two independent estimates, ± sqrt(h_now² + h_prev²) with h each night's
# interval half-width. Nights share seeds and problems, so a paired test would be tighter: this rule is
# conservative (fewer false alarms). A night whose arm has no earlier night is 'no-baseline'.
NIGHTLY_VIEW = """
CREATE VIEW nightly AS
WITH n AS (
    SELECT e.*, r.code_version,
           lag(e.nightly_id) OVER w AS prev_nightly_id,
           lag(e.run_id) OVER w AS prev_run_id,
           lag(e.delta_pp) OVER w AS prev_delta_pp,
           lag(e.ci_low_pp) OVER w AS prev_ci_low_pp,
           lag(e.ci_high_pp) OVER w AS prev_ci_high_pp,
           lag(r.code_version) OVER w AS prev_code_version
    FROM nightly_arms e LEFT JOIN runs r USING (run_id)
    WINDOW w AS (PARTITION BY e.experiment, e.config_hash, e.arm ORDER BY e.nightly_started_at, e.nightly_id)
), c AS (
    SELECT *, delta_pp - prev_delta_pp AS change_pp,
           sqrt(pow((ci_high_pp - ci_low_pp) / 2, 2) + pow((prev_ci_high_pp - prev_ci_low_pp) / 2, 2)) AS change_ci_pp
    FROM n
)
SELECT nightly_id, nightly_started_at, preset, arm, smoke,
       delta_pp, ci_low_pp, ci_high_pp, prev_delta_pp, change_pp, change_ci_pp,
       CASE WHEN prev_delta_pp IS NULL THEN 'no-baseline'
            WHEN change_pp < -change_ci_pp THEN 'regression'
            WHEN change_pp > change_ci_pp THEN 'improvement'
            ELSE 'within-ci' END AS verdict,
       coalesce(change_pp < -change_ci_pp, false) AS regression,
       run_id, prev_nightly_id, prev_run_id, code_version, prev_code_version,
       experiment, config_hash, seeds, rounds, problems, base_pass1, final_pass1, p_value
FROM c
"""


# Compute per run and arm (all seeds and rounds added up), so arms can be compared at equal compute.
# cpu_seconds count this process only: sandbox and Lean REPL workers are not in them.
COMPUTE_VIEW = """
CREATE VIEW compute AS
WITH st AS (
    SELECT run_id, arm,
           count(DISTINCT seed) AS seeds,
           sum(n_items) FILTER (WHERE stage IN ('sample', 'diagnose')) AS samples,
           sum(n_prompt_tokens) FILTER (WHERE stage IN ('sample', 'diagnose')) AS prompt_tokens,
           sum(n_completion_tokens) FILTER (WHERE stage IN ('sample', 'diagnose')) AS tokens_sampled,
           sum(seconds) FILTER (WHERE stage IN ('sample', 'diagnose')) AS sample_seconds,
           sum(verifier_calls) FILTER (WHERE stage = 'verify') AS verifier_calls,
           sum(seconds) FILTER (WHERE stage = 'verify') AS verify_seconds,
           sum(cpu_seconds) FILTER (WHERE stage = 'verify') AS verify_cpu_seconds,
           sum(n_completion_tokens) FILTER (WHERE stage = 'evaluate') AS eval_tokens_sampled
    FROM stages GROUP BY ALL
), tr AS (
    SELECT run_id, arm, sum(steps) AS train_steps, sum(n_examples) AS train_examples, sum(seconds) AS train_seconds
    FROM trainings GROUP BY ALL
)
SELECT st.*, tr.train_steps, tr.train_examples, tr.train_seconds
FROM st LEFT JOIN tr USING (run_id, arm)
"""


# The derived views, beside one view per table (what `pidistill sql --help` lists).
VIEWS = ("summary", "compute", "nightly")


def _open_current(path: Path, home: Path) -> duckdb.DuckDBPyConnection | None:
    """A read-only connection to the catalog at `path` if it is the current one for `home`, else None."""
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        if con.sql("SELECT home, version FROM _catalog").fetchall() == [(str(home), _version())]:
            return con
    except duckdb.Error:
        pass
    con.close()
    return None


def _is_current(path: Path, home: Path) -> bool:
    con = _open_current(path, home)
    if con is not None:
        con.close()
    return con is not None


def ensure_catalog(home: Path | None = None) -> Path:
    """Create (or rebuild, if stale or moved) the catalog of `home`; returns its path."""
    home = (home or home_dir()).resolve()
    path = home / CATALOG_NAME
    if path.exists() and _is_current(path, home):
        return path  # and so are the schema files: they were checked when this catalog was built
    return _build(home)


def _build(home: Path) -> Path:
    import pyarrow.parquet as pq

    from storage.schema import TABLES
    from storage.writer import TMP_MARK, write_parquet

    home.mkdir(parents=True, exist_ok=True)
    for table, schema in TABLES.items():
        f = _schema_file(home, table)
        if not f.exists() or not pq.read_schema(f).equals(schema):
            write_parquet(f, schema.empty_table())
    (home / LOCK_NAME).touch()  # before anything can hold it exclusively: readers lock it (storage.lock)
    path = home / CATALOG_NAME
    tmp = home / f"{CATALOG_NAME}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with duckdb.connect(str(tmp)) as con:
            for stmt in view_sql(home):
                con.execute(stmt)
            for stmt in _comment_sql(con):
                con.execute(stmt)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, Path(f"{tmp}.wal")):
            leftover.unlink(missing_ok=True)
    return path


@contextmanager
def connect(home: Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the catalog (built first if needed), for a `with` block. The block
    holds the catalog's read lock (`storage.lock.reading`): a compaction's swap or a file rewritten in
    place waits for it, so a query never reads half of one. Keep the block to the queries."""
    home = (home or home_dir()).resolve()
    path = home / CATALOG_NAME
    # One open when the catalog is current (a cold `pidistill sql` pays for each open).
    con = _open_current(path, home) if path.exists() else None
    if con is None:
        con = duckdb.connect(str(ensure_catalog(home)), read_only=True)
    with reading(home), con:
        yield con


def query(sql: str, home: Path | None = None, params: dict | None = None) -> pd.DataFrame:
    """Run one SQL query (with `$name` parameters) against the catalog and return a DataFrame."""
    with connect(home) as con:
        return con.execute(sql, params).df() if params else con.sql(sql).df()
