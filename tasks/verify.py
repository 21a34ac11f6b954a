"""Stage `verify`: judge each attempt with its domain's checker.

Verdicts fill the `status`, `passed`, `score` and `feedback` columns. A
completion seen before for the same problem is not checked again (the
cache key is (problem_id, completion)). When more than
`verify.max_error_rate` of the verdicts are verifier errors the round fails
loudly: a broken checker must never pass for a model that got worse.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from domains import Problem, Verdict
from experiments.config import ExperimentConfig
from tasks.common import RoundKey, domain_of, metered


class VerifierErrorRate(RuntimeError):
    """Too many verifier errors in one stage."""


def verify_rows(cfg: ExperimentConfig, problems: dict[str, Problem], rows: list[dict], counters: dict | None = None,
                check: bool = True) -> list[dict]:  # fmt: skip
    """Rows with verdict columns filled; raises VerifierErrorRate past the threshold (unless not `check`)."""
    domain = domain_of(cfg)
    unique: dict[tuple[str, str], int] = {}
    for row in rows:
        unique.setdefault((row["problem_id"], row["completion"]), len(unique))
    keys = list(unique)
    verdicts: list[Verdict] = domain.check_many([problems[p] for p, _ in keys], [c for _, c in keys])
    if counters is not None:
        counters["n_items"] += len(rows)
        counters["verifier_calls"] += len(keys)
    out = []
    for row in rows:
        v = verdicts[unique[(row["problem_id"], row["completion"])]]
        out.append({**row, "status": v.status, "passed": v.passed, "score": v.score, "feedback": v.feedback})
    if check:
        check_error_rate(cfg, out)
    return out


def check_error_rate(cfg: ExperimentConfig, rows: list[dict]) -> None:
    errors = [r for r in rows if r["status"] == "error"]
    if rows and len(errors) / len(rows) > cfg.verify.max_error_rate:
        raise VerifierErrorRate(
            f"{len(errors)} of {len(rows)} verdicts are verifier errors "
            f"(more than verify.max_error_rate={cfg.verify.max_error_rate}); first: {errors[0]['feedback']}"
        )


@task(name="verify", retries=0, cache_policy=NO_CACHE)
def verify(cfg: ExperimentConfig, key: RoundKey, problems: dict[str, Problem], rows: list[dict],
           shard: int | None = None) -> list[dict]:  # fmt: skip
    level = rows[0]["attempt_idx"] if rows else 0
    with metered(key, "verify", level, shard=shard) as m:
        # A shard's error rate is checked with the whole stage's (flows.scale), as if unsharded.
        return verify_rows(cfg, problems, rows, m, check=shard is None)
