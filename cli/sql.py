"""`pidistill sql`: DuckDB over the catalog, printed as a table or CSV, on as few imports as possible.

An analyst runs it dozens of times in a session, each a cold process, so its start is most of its
time: `cli.entry` sends a plain `pidistill sql QUERY [--format F] [--max-rows N]` here without
importing the CLI framework, the config models or pandas (0.6 s together); anything else
(`--help`, a typo) goes through the full CLI, which calls `run` below for the same output.

    $ pidistill sql "select arm, avg(passed::int) as pass_rate from attempts group by arm"
               arm  pass_rate
          no-retry   0.412500
    retry-feedback   0.537500
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import sys
from collections.abc import Sequence

FORMATS = ("table", "csv")
MAX_COLWIDTH = 60


def parse(args: Sequence[str]) -> tuple[str, str, str] | None:
    """(query, format, max_rows) of a plain `sql` command line; None for anything the full CLI should
    answer (help, a missing or unknown option, a bad value) with its own messages."""
    query, options, i = None, {"--format": "table", "--max-rows": "200"}, 0
    while i < len(args):
        a = args[i]
        name, eq, value = a.partition("=")
        if name in options:
            if not eq:
                if i + 1 >= len(args):
                    return None
                i, value = i + 1, args[i + 1]
            options[name] = value
        elif a.startswith("-") or query is not None:
            return None
        else:
            query = a
        i += 1
    if query is None or options["--format"] not in FORMATS:
        return None
    return query, options["--format"], options["--max-rows"]


def run(query: str, format: str = "table", max_rows: int | str = 200) -> int:
    """Run `query` against the catalog and print the result; 2 with a one-line message for bad input."""
    try:
        limit = int(max_rows)
    except ValueError:
        limit = 0
    if limit < 1:
        print(f"pidistill sql: --max-rows {max_rows}: give at least 1", file=sys.stderr)
        return 2
    import duckdb

    from storage.catalog import connect

    try:
        with connect() as con:
            rel = con.sql(query)
            if rel is None:  # a statement, not a query (SET, PRAGMA ...): nothing to show
                return 0
            columns, rows = rel.columns, rel.fetchall()
    except duckdb.Error as exc:
        print(f"pidistill sql: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if format == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(columns)
        out.writerows(["" if v is None else v for v in row] for row in rows)
    else:
        print(table(columns, rows, limit))
    return 0


def _cell(v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6f}" if 1e-4 <= abs(v) < 1e6 or v == 0 else f"{v:.6g}"
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    text = " ".join(str(v).split()) if isinstance(v, str) else str(v)
    return text if len(text) <= MAX_COLWIDTH else text[: MAX_COLWIDTH - 3] + "..."


def table(columns: Sequence[str], rows: Sequence[Sequence[object]], max_rows: int) -> str:
    """Columns right-aligned under their names; past `max_rows`, the first and last halves with a
    `...` line between and the result's size below."""
    if not rows:
        return f"(no rows; columns: {', '.join(columns)})"
    shown: list[Sequence[object] | None] = list(rows)
    if len(rows) > max_rows:
        head, tail = (max_rows + 1) // 2, max_rows // 2
        shown = [*rows[:head], None, *(rows[len(rows) - tail :] if tail else [])]
    cells = [[_cell(v) for v in r] if r is not None else ["..."] * len(columns) for r in shown]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [" ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in [list(columns), *cells]]
    if len(rows) > max_rows:
        lines.append(f"\n[{len(rows)} rows x {len(columns)} columns]")
    return "\n".join(lines)
