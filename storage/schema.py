"""Column schemas of every table pidistill writes, and `Attempt`, the typed row of `attempts`.

One attempt, as sampled, verified and decided (abridged):

    Attempt(run_id="demo-3f2a", arm="rft", seed=0, round=1, phase="train",
            problem_id="arith-5d41402a", attempt_id="a9c0...", attempt_idx=0, parent_id=None,
            prompt="Question: What is 37 + 48 - 15?\\nAnswer:", completion=" 37+48=85. 85-15=70. #### 70", ...)
      .with_verdict(Verdict("pass", True, 1.0))     # status="pass", passed=True, score=1.0, feedback=""
      .decided(None)                                # accepted=True, reject_reason=None

The `attempts` schema is derived from `Attempt`'s fields (`arrow_schema`): a field's
Python type gives its arrow type (`Int32` where the column is int32), its order the
column order. The other tables are declared as arrow schemas directly.

Parquet files carry these schemas exactly; DuckDB views read them with
`union_by_name`, so a column added later reads as NULL in older runs.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, fields, replace
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Protocol, Union, get_args, get_origin, get_type_hints

import pyarrow as pa

_TS = pa.timestamp("us", tz="UTC")

# Row field types -> arrow types. A plain `int` is int64; `Int32` marks an int32 column, `TokenIds` a
# list<int32> one (held as a tuple: rows are frozen).
Int32 = Annotated[int, pa.int32()]
TokenIds = Annotated[tuple[int, ...], pa.list_(pa.int32())]
_ARROW_OF = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), datetime: _TS}


def arrow_type(hint: Any) -> pa.DataType:
    """`str`, `Int32`, `float | None`, ... -> the column's arrow type. `| None` changes nothing:
    every column is nullable, in parquet as in DuckDB."""
    if get_origin(hint) in (Union, types.UnionType):
        (hint,) = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) is Annotated:
        return get_args(hint)[1]
    return _ARROW_OF[hint]


@cache
def arrow_schema(row_type: type) -> pa.Schema:
    """The arrow schema of a row dataclass: one column per field, in field order."""
    hints = get_type_hints(row_type, include_extras=True)
    return pa.schema([(f.name, arrow_type(hints[f.name])) for f in fields(row_type)])


class VerdictLike(Protocol):
    """What `Attempt.with_verdict` reads (domains.Verdict; storage imports nothing above it)."""

    @property
    def status(self) -> str: ...
    @property
    def passed(self) -> bool: ...
    @property
    def score(self) -> float: ...
    @property
    def feedback(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def flags(self) -> str | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One completion sampled for one prompt: a row of `attempts`.

    Sampling (and diagnosis, evaluation, OPSD rollouts) builds it with the verdict and
    decision empty; `with_verdict` and `decided` return filled-in copies. The field order
    is the column order of the table (do not reorder: existing parquet and views rely on it).
    """

    run_id: str
    arm: str
    seed: Int32
    round: Int32
    phase: str  # train | eval | diagnosis | opsd
    problem_id: str
    attempt_id: str
    attempt_idx: Int32  # 0 = first try, k = retry level k (a fan's follow-ups: all 1)
    sample_idx: Int32  # which of the n samples drawn for this prompt (OPSD: the training step)
    parent_id: str | None = None  # the failed attempt a retry (or a diagnosis) answers
    model_ref: str
    sampler: str
    temperature: float
    pi_kind: str | None = None
    pi_text: str | None = None
    prompt: str
    teacher_prompt: str | None = None  # OPSD rollouts: what the teacher saw (prompt + PI)
    completion: str
    # The verdict (verify): empty until `with_verdict`; diagnoses are never verified.
    status: str | None = None  # pass | fail | error | timeout
    passed: bool | None = None
    score: float | None = None
    feedback: str | None = None
    n_prompt_tokens: Int32
    n_completion_tokens: Int32
    # The decision (filter, train phase only): empty until `decided`.
    accepted: bool | None = None
    reject_reason: str | None = None
    created_at: datetime
    fail_reason: str | None = None  # the verdict's kind of fail (no_answer); columns added later go last
    flags: str | None = None  # suspicion flags of the verdict (code: frames, gc, builtins, exit, fds, ...)
    # Whether the completion copies the PI of its own prompt (verify, domains.pi_copy); NULL without PI.
    copies_pi: bool | None = None
    pi_overlap: float | None = None  # share of the PI's token 8-grams the completion repeats verbatim
    # Provenance (models.sampling.base): enough to re-score or re-sample this one attempt. NULL in older runs.
    prompt_token_sha: str | None = None  # token_sha of the prompt's ids as the sampler fed them
    completion_token_ids: TokenIds | None = None  # the generated ids (eos, stop string included)
    completion_token_sha: str | None = None  # token_sha of completion_token_ids
    sampler_seed: int | None = None  # the seed that determined it (vLLM: the request's; HF: the chunk's)
    sample_key: str | None = None  # its place in that draw: "request i sample d of n" | "chunk c prompt j of P ..."
    policy_digest: str | None = None  # the weights sampled from (models.policy); NULL: not known (OPSD student)

    def with_verdict(self, verdict: VerdictLike) -> Attempt:
        return replace(
            self,
            status=verdict.status,
            passed=verdict.passed,
            score=verdict.score,
            feedback=verdict.feedback,
            fail_reason=verdict.reason,
            flags=verdict.flags,
        )

    def with_pi_copy(self, copies: bool, overlap: float | None) -> Attempt:
        return replace(self, copies_pi=copies, pi_overlap=overlap)

    def decided(self, reject_reason: str | None) -> Attempt:
        """Accepted when there is no reason to reject (every rejection has one)."""
        return replace(self, accepted=reject_reason is None, reject_reason=reject_reason)

    def to_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: list[Any]) -> None:
        """Unpickle (stage checkpoints, tasks.resume), also an attempt pickled before the later columns existed:
        a run resumed under newer code reads them as their defaults, NULL, as parquet readers do."""
        for i, f in enumerate(fields(self)):
            object.__setattr__(self, f.name, state[i] if i < len(state) else f.default)


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
        ("smoke", pa.bool_()),  # run with --smoke (micro scale); NULL in runs written before the column
    ]
)

ATTEMPTS = arrow_schema(Attempt)

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
        ("stage", pa.string()),  # select-problems | sample | diagnose | verify | filter | train | evaluate
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

# One row per nightly run x preset x arm, written by tasks/nightly.py after each preset's run: the arm's
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

# One row per run x arm, written with the run's report (tasks/report.py) and rewritten when a resumed run
# reports again: the arm's Δpp vs base with its 95 % paired-bootstrap interval and p-value, and the same
# against the reference arm (the first arm), so the `summary` view carries intervals, not point estimates only.
ARM_RESULTS = pa.schema(
    [
        ("run_id", pa.string()),
        ("arm", pa.string()),
        ("delta_pp", pa.float64()),  # last round minus base (round 0), percentage points
        ("ci_low_pp", pa.float64()),  # its 95 % interval
        ("ci_high_pp", pa.float64()),
        ("p_value", pa.float64()),  # two-sided, 'no change', from the same bootstrap
        ("reference_arm", pa.string()),  # the arm compared against (the config's first arm)
        ("vs_reference_pp", pa.float64()),  # this arm's last round minus the reference arm's; NULL for it
        ("vs_reference_ci_low_pp", pa.float64()),
        ("vs_reference_ci_high_pp", pa.float64()),
        ("vs_reference_p_value", pa.float64()),
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
    "arm_results": ARM_RESULTS,
}
