"""Column schemas of every table pidistill writes.

One attempts row, as stored (abridged):

    {"run_id": "demo-3f2a", "arm": "rft", "seed": 0, "round": 1, "phase": "train",
     "problem_id": "arith-5d41402a", "attempt_id": "a9c0...", "attempt_idx": 0, "parent_id": None,
     "prompt": "Question: What is 37 + 48 - 15?\\nAnswer:", "completion": " 37+48=85. 85-15=70. #### 70",
     "status": "pass", "passed": True, "score": 1.0, "accepted": True, "reject_reason": None, ...}

Parquet files carry these schemas exactly; DuckDB views read them with
`union_by_name`, so a column added later reads as NULL in older runs.
"""

from __future__ import annotations

import pyarrow as pa

_TS = pa.timestamp("us", tz="UTC")

_KEY = [
    ("run_id", pa.string()),
    ("arm", pa.string()),
    ("seed", pa.int32()),
    ("round", pa.int32()),
]

RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("experiment", pa.string()),
        ("config_json", pa.string()),
        ("config_hash", pa.string()),
        ("code_version", pa.string()),
        ("data_hash", pa.string()),
        ("started_at", _TS),
        ("finished_at", _TS),
        ("status", pa.string()),  # running | completed | failed
        ("error", pa.string()),
    ]
)

ATTEMPTS = pa.schema(
    _KEY
    + [
        ("phase", pa.string()),  # train | eval | diagnosis | opsd
        ("problem_id", pa.string()),
        ("attempt_id", pa.string()),
        ("attempt_idx", pa.int32()),  # 0 = first try, k = k-th retry
        ("sample_idx", pa.int32()),  # which of the n samples drawn for this prompt
        ("parent_id", pa.string()),  # the failed attempt a retry answers
        ("model_ref", pa.string()),
        ("sampler", pa.string()),
        ("temperature", pa.float64()),
        ("pi_kind", pa.string()),
        ("pi_text", pa.string()),
        ("prompt", pa.string()),
        ("teacher_prompt", pa.string()),  # OPSD rollouts: what the teacher saw (prompt + PI)
        ("completion", pa.string()),
        ("status", pa.string()),  # pass | fail | error | timeout
        ("passed", pa.bool_()),
        ("score", pa.float64()),
        ("feedback", pa.string()),
        ("n_prompt_tokens", pa.int32()),
        ("n_completion_tokens", pa.int32()),
        ("accepted", pa.bool_()),
        ("reject_reason", pa.string()),
        ("created_at", _TS),
    ]
)

SFT_EXAMPLES = pa.schema(
    _KEY
    + [
        ("problem_id", pa.string()),
        ("attempt_id", pa.string()),
        ("prompt", pa.string()),  # exactly what the trainer saw
        ("completion", pa.string()),
    ]
)

TRAININGS = pa.schema(
    _KEY
    + [
        ("method", pa.string()),
        ("init_model_ref", pa.string()),
        ("n_examples", pa.int32()),
        ("steps", pa.int32()),
        ("lr", pa.float64()),
        ("final_loss", pa.float64()),
        ("checkpoint", pa.string()),
        ("seconds", pa.float64()),
    ]
)

EVALUATIONS = pa.schema(
    _KEY
    + [
        ("problem_id", pa.string()),
        ("model_ref", pa.string()),
        ("n", pa.int32()),
        ("n_pass", pa.int32()),
    ]
)

STAGES = pa.schema(
    _KEY
    + [
        ("stage", pa.string()),  # sample | diagnose | verify | train | evaluate
        ("attempt_idx", pa.int32()),  # retry level for sample/verify; 0 otherwise
        ("model_ref", pa.string()),
        ("n_items", pa.int32()),  # completions sampled, verdicts, examples
        ("n_prompt_tokens", pa.int64()),
        ("n_completion_tokens", pa.int64()),
        ("verifier_calls", pa.int32()),  # distinct (problem, completion) pairs checked
        ("seconds", pa.float64()),  # wall clock
        ("cpu_seconds", pa.float64()),  # this process's CPU time (sandbox/REPL workers not included)
        ("started_at", _TS),
        ("shard", pa.int32()),  # which shard of a sharded sample/verify stage (scale.shards); null: unsharded
        ("worker", pa.string()),  # host:pid that ran it, "ray:<node id>:host:pid" in a Ray worker
    ]
)

# One row per nightly run x preset x arm, written by flows/nightly.py after each preset's run: the arm's
# Δpp vs base with its 95 % paired-bootstrap interval (analysis.report's numbers, in percentage points), so
# the `nightly` view can compare nights in SQL. Nightly runs are otherwise ordinary runs whose run_id is
# `<nightly_id>-<preset>` with nightly_id = `nightly-<UTC yyyymmdd-HHMMSS>-<hex>`.
NIGHTLY_ARMS = pa.schema(
    [
        ("nightly_id", pa.string()),  # one nightly flow run (all its presets share it)
        ("nightly_started_at", _TS),  # when that nightly flow run started; orders nights
        ("preset", pa.string()),
        ("smoke", pa.bool_()),  # the preset ran at micro scale (--smoke)
        ("run_id", pa.string()),  # the preset's experiment run
        ("experiment", pa.string()),
        ("config_hash", pa.string()),  # nights compare only runs with the same experiment and config hash
        ("arm", pa.string()),
        ("seeds", pa.int32()),
        ("rounds", pa.int32()),
        ("problems", pa.int32()),
        ("base_pass1", pa.float64()),
        ("final_pass1", pa.float64()),
        ("delta_pp", pa.float64()),  # last round minus base, percentage points
        ("ci_low_pp", pa.float64()),  # its 95 % interval
        ("ci_high_pp", pa.float64()),
        ("p_value", pa.float64()),
        ("created_at", _TS),
    ]
)

# table name -> schema; also the set of views in the catalog.
TABLES: dict[str, pa.Schema] = {
    "runs": RUNS,
    "attempts": ATTEMPTS,
    "sft_examples": SFT_EXAMPLES,
    "trainings": TRAININGS,
    "evaluations": EVALUATIONS,
    "stages": STAGES,
    "nightly_arms": NIGHTLY_ARMS,
}
