"""`make_attempt(**fields)`: an `Attempt` for tests that care about a few of its fields.

>>> make_attempt(problem_id="p", completion=" 1+1=3. #### 3").with_verdict(Verdict("fail", False, 0.0))
"""

from __future__ import annotations

from datetime import UTC, datetime

from storage.schema import Attempt

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_DEFAULTS = dict(
    run_id="r",
    arm="a",
    seed=0,
    round=1,
    phase="train",
    problem_id="p",
    attempt_id="p-0",
    attempt_idx=0,
    sample_idx=0,
    model_ref="m",
    sampler="hf",
    temperature=1.0,
    prompt="Question: ?\nAnswer:",
    completion="c0",
    n_prompt_tokens=4,
    n_completion_tokens=2,
    created_at=T0,
)


def make_attempt(**fields: object) -> Attempt:
    return Attempt(**{**_DEFAULTS, **fields})
