"""One round: sample -> verify (-> follow-ups: sample -> verify, per retry level) -> filter -> train -> evaluate.

Wiring only. Every stage runs once per (run, arm, seed, round) through `resumable`; collections of
rows, requests and problems go to tasks wrapped in `quote()`, because Prefect otherwise walks every
element of a task's parameters looking for upstream futures, which cost more than the stages
themselves on a small round (benchmarks/orchestration_overhead.py: 17 % of a demo round).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from experiments.config import ExperimentConfig
from flows.scale import sample_and_verify
from storage.home import home_dir
from tasks.curriculum import select_problems
from tasks.evaluate import evaluate, round_summary
from tasks.filter import filter_attempts
from tasks.follow_ups import failed, follow_up_levels, follow_ups, next_parents
from tasks.keys import RoundKey
from tasks.resume import resumable
from tasks.sample import diagnoses, first_requests
from tasks.train import train


@flow(name="round", flow_run_name="{arm} seed={seed} round={round}")
def round_flow(
    cfg: ExperimentConfig,
    run_id: str,
    arm: str,
    seed: int,
    round: int,
    model_ref: str,
    base_ref: str,
    retry_ref: str | None = None,
) -> str:
    """Run one round of arm `arm` from `model_ref`; returns the model the next round starts from.

    `retry_ref` samples the follow-ups (cross-model retry); default `model_ref`."""
    key = RoundKey(run_id, arm, seed, round, str(home_dir()))
    problems = {p.problem_id: p for p in select_problems(cfg, key)}
    attempts = sample_and_verify(cfg, key, problems, 0, model_ref, first_requests(cfg, problems.values()))
    follow_up_ref = retry_ref or model_ref
    parents = failed(cfg, attempts)
    for level in follow_up_levels(cfg):  # a chain's levels 1..K, or a fan's one
        if not parents:
            break
        notes = diagnoses(cfg, key, follow_up_ref, problems, parents, level)
        requests = follow_ups(cfg, seed, round, problems, parents, level, notes)
        latest = sample_and_verify(cfg, key, problems, level, follow_up_ref, requests)
        attempts = attempts + latest
        parents = next_parents(cfg, parents, latest)
    examples = resumable(key, "filter", filter_attempts, cfg, key, quote(problems), quote(attempts), model_ref)
    new_ref = resumable(key, "train", train, cfg, key, model_ref, base_ref, quote(examples), quote(problems))
    score = resumable(key, "evaluate", evaluate, cfg, [key], new_ref)
    get_run_logger().info(round_summary(key, attempts, examples, score))
    return new_ref
