"""Numbers about a run, computed in SQL over the catalog.

    >>> arm_summary("demo-20261126-104512-3f2a")
         arm  seeds  rounds  base_pass1  final_pass1  delta_pp
    0    rft      3       2       0.255        0.300      4.50
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from storage.catalog import query

# pass@1 per (arm, seed, round) = passes / samples over the held-out problems;
# delta = final round minus round 0 (the base model) of the same seed, averaged.
ARM_SUMMARY_SQL = """
WITH per_seed AS (
    SELECT arm, seed, round, sum(n_pass)::DOUBLE / sum(n) AS pass1
    FROM evaluations WHERE run_id = $run_id GROUP BY ALL
), last AS (
    SELECT arm, seed, max(round) AS round FROM per_seed GROUP BY ALL
)
SELECT f.arm,
       count(*)::INT AS seeds,
       max(f.round)::INT AS rounds,
       avg(b.pass1) AS base_pass1,
       avg(f.pass1) AS final_pass1,
       100 * avg(f.pass1 - b.pass1) AS delta_pp
FROM per_seed f
JOIN last l USING (arm, seed, round)
JOIN per_seed b ON b.arm = f.arm AND b.seed = f.seed AND b.round = 0
GROUP BY f.arm ORDER BY f.arm
"""

PASS_BY_ROUND_SQL = """
SELECT arm, round, count(DISTINCT seed)::INT AS seeds, avg(pass1) AS pass1
FROM (SELECT arm, seed, round, sum(n_pass)::DOUBLE / sum(n) AS pass1
      FROM evaluations WHERE run_id = $run_id GROUP BY ALL)
GROUP BY ALL ORDER BY arm, round
"""


def _query(sql: str, run_id: str, home: Path | None) -> pd.DataFrame:
    return query(sql, home, {"run_id": run_id})


def arm_summary(run_id: str, home: Path | None = None) -> pd.DataFrame:
    return _query(ARM_SUMMARY_SQL, run_id, home)


def pass_by_round(run_id: str, home: Path | None = None) -> pd.DataFrame:
    return _query(PASS_BY_ROUND_SQL, run_id, home)


def format_summary(df: pd.DataFrame) -> str:
    """A fixed-width table of arm_summary for the terminal."""
    lines = [f"{'arm':<20} {'seeds':>5} {'rounds':>6} {'base pass@1':>11} {'final pass@1':>12} {'Δpp vs base':>11}"]
    for r in df.itertuples():
        lines.append(
            f"{r.arm:<20} {r.seeds:>5} {r.rounds:>6} {r.base_pass1:>11.3f} {r.final_pass1:>12.3f} {r.delta_pp:>+11.1f}"
        )
    return "\n".join(lines)
