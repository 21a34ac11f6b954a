"""Why an arm moved: where its training data came from and what changed on the held-out problems.

Four questions a Δpp alone cannot answer, each one SQL query over the attempts table:

- `acceptance_by_level`: per arm and follow-up level (0 the first try, 1 the first follow-up, ...), how many
  attempts were drawn, passed and became SFT data. A retry arm whose level 1 passes no more often than a
  double-sample control's is not using what its retry prompt shows.
- `examples_by_problem`: per arm, the accepted examples from problems a first try already solved (the model
  could do these; the examples sharpen it) and from problems only a follow-up solved (newly solved: what a
  retry adds that plain rejection sampling cannot).
- `format_or_answer`: per arm and round, held-out pass@1 split into the share of completions with an answer the
  verifier could read and the pass rate among those. A gain in the first alone is format learning (the model
  learnt to end with "#### 13"), not arithmetic.
- `eval_flips`: per arm, held-out (seed, problem) pairs the last round gained (failed at round 0, passes now)
  and lost; with one greedy sample a problem, Δ is their difference over the pairs, so a Δ of +1 pp can be
  40 gains and 38 losses.

Counts are over all seeds and rounds of the train phase (examples) and all seeds of the eval phase (flips).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from storage.catalog import query

ACCEPTANCE_BY_LEVEL_SQL = """
SELECT arm, coalesce(attempt_idx, 0) AS level, count(*) AS attempts,
       count(*) FILTER (WHERE passed) AS passed, count(*) FILTER (WHERE accepted) AS accepted,
       avg(passed::INT) AS pass_rate, avg(accepted::INT) AS acceptance_rate
FROM attempts WHERE run_id = $run_id AND phase = 'train'
GROUP BY ALL ORDER BY arm, level
"""

EXAMPLES_BY_PROBLEM_SQL = """
WITH per_problem AS (
    SELECT arm, seed, round, problem_id,
           bool_or(passed AND coalesce(attempt_idx, 0) = 0) AS first_try_solved,
           count(*) FILTER (WHERE accepted) AS accepted
    FROM attempts WHERE run_id = $run_id AND phase = 'train'
    GROUP BY ALL
)
SELECT arm, count(*) AS problems,
       count(*) FILTER (WHERE first_try_solved) AS solved_by_a_first_try,
       count(*) FILTER (WHERE NOT first_try_solved AND accepted > 0) AS newly_solved,
       coalesce(sum(accepted) FILTER (WHERE first_try_solved), 0)::BIGINT AS examples_already_solved,
       coalesce(sum(accepted) FILTER (WHERE NOT first_try_solved), 0)::BIGINT AS examples_newly_solved,
       sum(accepted)::BIGINT AS examples
FROM per_problem GROUP BY arm ORDER BY arm
"""

FORMAT_OR_ANSWER_SQL = """
SELECT arm, round, count(*) AS completions,
       avg((coalesce(fail_reason, '') NOT IN ('no_answer', 'unclosed_think'))::INT) AS answered,
       avg(passed::INT) AS pass1,
       avg(passed::INT) FILTER (WHERE coalesce(fail_reason, '') NOT IN ('no_answer', 'unclosed_think'))
           AS pass1_when_answered
FROM attempts WHERE run_id = $run_id AND phase = 'eval'
GROUP BY ALL ORDER BY arm, round
"""

# Greedy evaluation draws one completion a problem; with n > 1 a (seed, problem) pair counts as passed on its
# pass rate over 1/2, so a flip is a move across the middle.
EVAL_FLIPS_SQL = """
WITH last AS (SELECT arm, max(round) AS round FROM evaluations WHERE run_id = $run_id GROUP BY arm),
pairs AS (
    SELECT b.arm, b.seed, b.problem_id, b.n_pass / b.n > 0.5 AS before, f.n_pass / f.n > 0.5 AS after
    FROM evaluations b
    JOIN last USING (arm)
    JOIN evaluations f ON f.run_id = b.run_id AND f.arm = b.arm AND f.seed = b.seed
         AND f.problem_id = b.problem_id AND f.round = last.round
    WHERE b.run_id = $run_id AND b.round = 0 AND last.round > 0
)
SELECT arm, count(*) AS pairs, count(*) FILTER (WHERE after AND NOT before) AS gained,
       count(*) FILTER (WHERE before AND NOT after) AS lost,
       count(*) FILTER (WHERE before AND after) AS kept,
       count(*) FILTER (WHERE NOT before AND NOT after) AS never
FROM pairs GROUP BY arm ORDER BY arm
"""


def acceptance_by_level(run_id: str, home: Path | None = None) -> pd.DataFrame:
    return query(ACCEPTANCE_BY_LEVEL_SQL, home, {"run_id": run_id})


def examples_by_problem(run_id: str, home: Path | None = None) -> pd.DataFrame:
    """`problems` counts (seed, round, problem) triples: a problem sampled in two rounds counts twice."""
    return query(EXAMPLES_BY_PROBLEM_SQL, home, {"run_id": run_id})


def format_or_answer(run_id: str, home: Path | None = None) -> pd.DataFrame:
    return query(FORMAT_OR_ANSWER_SQL, home, {"run_id": run_id})


def eval_flips(run_id: str, home: Path | None = None) -> pd.DataFrame:
    return query(EVAL_FLIPS_SQL, home, {"run_id": run_id})
