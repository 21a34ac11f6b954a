"""Stage `evaluate`: pass@1 of a model on the held-out (test split) problems.

Writes the eval attempts (phase = eval) and one `evaluations` row per problem:

    {"run_id": "demo-...", "arm": "rft", "seed": 0, "round": 2, "problem_id": "arith-...", "n": 1, "n_pass": 1}

Round 0 is the base model. Arms whose model and eval settings coincide share
one evaluation of it (`keys` lists them); the rows are written under each arm.
Evaluation sampling is seeded by (seed, round) only, never by arm, so arms are
compared on the same random numbers.
"""

from __future__ import annotations

from collections import defaultdict

from prefect import task
from prefect.cache_policies import NO_CACHE

from experiments.config import ExperimentConfig
from storage.writer import write_rows
from tasks.common import (
    RoundKey, attempt_id, count_tokens, derive_seed, domain_of, eval_problems, metered, retry_on_infrastructure,
)
from tasks.sample import draw, first_requests, make_sampler
from tasks.verify import verify_rows


def pass_at_1(rows: list[dict]) -> float:
    return sum(r["passed"] for r in rows) / len(rows) if rows else 0.0


def _for_key(rows: list[dict], key: RoundKey) -> list[dict]:
    return [
        {**r, **key.columns(), "attempt_id": attempt_id(*key.columns().values(), "eval", r["problem_id"], r["sample_idx"])}
        for r in rows
    ]


def evaluation_rows(key: RoundKey, rows: list[dict]) -> list[dict]:
    per_problem: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        per_problem[r["problem_id"]].append(r)
    return [
        {**key.columns(), "problem_id": pid, "model_ref": group[0]["model_ref"], "n": len(group),
         "n_pass": sum(r["passed"] for r in group)}
        for pid, group in per_problem.items()
    ]


@task(name="evaluate", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_on_infrastructure,
      cache_policy=NO_CACHE)
def evaluate(cfg: ExperimentConfig, keys: list[RoundKey], model_ref: str) -> float:
    """Evaluate `model_ref`, write its rows under every key; returns pass@1."""
    e, key = cfg.eval, keys[0]
    with metered(keys, "evaluate", 0, model_ref) as m:
        problems = eval_problems(cfg)
        rows = draw(
            make_sampler(cfg, model_ref), key, first_requests(cfg, problems), phase="eval",
            seed=derive_seed(key.seed, key.round, "eval"), n=e.n, temperature=e.temperature,
            top_p=cfg.sampling.top_p, max_new_tokens=e.max_new_tokens or cfg.sampling.max_new_tokens,
            stop=domain_of(cfg).stop,
        )
        count_tokens(m, rows)
        rows = verify_rows(cfg, {p.problem_id: p for p in problems}, rows, m)
        m["n_items"] = len(rows)
    for k in keys:
        mine = [{**r, "accepted": None, "reject_reason": None} for r in _for_key(rows, k)]
        write_rows(k.path("attempts", "eval"), mine, "attempts")
        write_rows(k.path("evaluations", "eval"), evaluation_rows(k, mine), "evaluations")
    return pass_at_1(rows)
