"""Stage `evaluate`: pass@1 of a model on the held-out (test split) problems.

Writes the eval attempts (phase = eval) and one `evaluations` row per problem:

    {"run_id": "demo-...", "arm": "rft", "seed": 0, "round": 2, "problem_id": "arith-...", "n": 1, "n_pass": 1}

Round 0 is the base model. Arms whose model and eval settings coincide share
one evaluation of it (`keys` lists them); the rows are written under each arm.
Evaluation sampling is seeded by (seed, round) only, never by arm, so arms are
compared on the same random numbers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from experiments.config import ExperimentConfig
from storage.home import home_dir
from storage.schema import Attempt
from tasks.domain import eval_problems
from tasks.failures import retry_on_infrastructure
from tasks.keys import RoundKey, attempt_id, derive_seed
from tasks.metering import count_tokens, metered
from tasks.resume import resumable
from tasks.runs import resolve_model
from tasks.sample import draw, draw_settings, first_requests, make_sampler, style_of
from tasks.shards import stage_threads
from tasks.verify import verify_rows


def pass_at_1(attempts: list[Attempt]) -> float:
    return sum(bool(a.passed) for a in attempts) / len(attempts) if attempts else 0.0


def _for_key(attempts: list[Attempt], key: RoundKey) -> list[Attempt]:
    """The attempts of a shared evaluation as the arm of `key` stores them."""
    return [
        replace(a, **key.columns(), attempt_id=attempt_id(*key.columns().values(), "eval", a.problem_id, a.sample_idx))
        for a in attempts
    ]


def evaluation_rows(key: RoundKey, attempts: list[Attempt]) -> list[dict]:
    per_problem: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        per_problem[a.problem_id].append(a)
    return [
        {
            **key.columns(),
            "problem_id": pid,
            "model_ref": group[0].model_ref,
            "n": len(group),
            "n_pass": sum(a.passed for a in group),
        }
        for pid, group in per_problem.items()
    ]


@task(
    name="evaluate", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_on_infrastructure, cache_policy=NO_CACHE
)
def evaluate(cfg: ExperimentConfig, keys: list[RoundKey], model_ref: str) -> float:
    """Evaluate `model_ref`, write its rows under every key; returns pass@1."""
    key = keys[0]
    with metered(keys, "evaluate", 0, model_ref) as m, stage_threads(cfg.scale):
        problems = eval_problems(cfg)
        sampler = make_sampler(cfg, model_ref)
        style = style_of(cfg, sampler.tokenizer)
        rows = draw(
            sampler,
            style,
            key,
            first_requests(cfg, problems),
            phase="eval",
            seed=derive_seed(key.seed, key.round, "eval"),
            settings=draw_settings(cfg, "eval", key.round, 0, style),
        )
        count_tokens(m, rows)
        rows = verify_rows(cfg, {p.problem_id: p for p in problems}, rows, m, rewards=False)
        m["n_items"] = len(rows)
    for k in keys:
        mine = _for_key(rows, k)
        k.write("attempts", "eval", mine)  # no decision: eval attempts train nothing
        k.write("evaluations", "eval", evaluation_rows(k, mine))
    return pass_at_1(rows)


def base_eval_groups(config: ExperimentConfig) -> dict[str, list[str]]:
    """Arms whose base model and evaluation coincide share one round-0 evaluation."""
    groups: dict[str, list[str]] = {}
    for arm in config.arms:
        c = config.for_arm(arm.name)
        signature = json.dumps(
            [
                c.model.model_dump(),
                c.eval.model_dump(),
                c.domain.model_dump(),
                c.sampling.top_p,
                c.sampling.max_new_tokens,
            ],
            sort_keys=True,
        )
        groups.setdefault(signature, []).append(arm.name)
    return groups


def evaluate_base_models(config: ExperimentConfig, run_id: str, seed: int) -> None:
    """Round 0 of every arm for `seed`: each distinct base model evaluated once, written under its arms."""
    log = get_run_logger()
    for arms in base_eval_groups(config).values():
        cfg = config.for_arm(arms[0])
        keys = [RoundKey(run_id, a, seed, 0, str(home_dir())) for a in arms]
        score = resumable(keys[0], "evaluate", evaluate, cfg, keys, resolve_model(cfg.model))
        log.info(f"[seed={seed}] base model pass@1 {score:.3f} (arms {', '.join(arms)})")


def round_summary(key: RoundKey, attempts: list[Attempt], examples: list[dict], score: float) -> str:
    """The line a round logs: what it sampled, what passed, what it trained on, where it got to."""
    retried = sum(a.attempt_idx > 0 for a in attempts)
    return (
        f"[{key.arm} seed={key.seed} round={key.round}] {len(attempts)} attempts ({retried} follow-ups), "
        f"{sum(bool(a.passed) for a in attempts)} passed, {len(examples)} SFT examples; eval pass@1 {score:.3f}"
    )
