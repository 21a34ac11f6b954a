"""One round: sample -> verify (-> retry: sample -> verify, K times) -> filter -> train -> evaluate. Wiring only.

Collections of rows, requests and problems go to tasks wrapped in `quote()`: Prefect otherwise
walks every element of a task's parameters looking for upstream futures, which cost more than the
stages themselves on a small round (benchmarks/orchestration_overhead.py: 17 % of a demo round).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from experiments.config import ExperimentConfig
from flows.scale import sample_and_verify, sharded
from storage.writer import home_dir
from tasks.common import RoundKey, resumable
from tasks.curriculum import select_problems
from tasks.evaluate import evaluate
from tasks.filter import filter_attempts
from tasks.retry import failed, follow_ups
from tasks.sample import diagnose, first_requests, sample
from tasks.train import train
from tasks.verify import verify


@flow(name="round", flow_run_name="{arm} seed={seed} round={round}")
def round_flow(
    cfg: ExperimentConfig, run_id: str, arm: str, seed: int, round: int, model_ref: str, base_ref: str,
    retry_ref: str | None = None,
) -> str:
    """Run one round of arm `arm` from `model_ref`; returns the model the next round starts from.

    `retry_ref` samples the follow-ups (cross-model retry); default `model_ref`."""
    log = get_run_logger()
    key = RoundKey(run_id, arm, seed, round, str(home_dir()))
    problems = {p.problem_id: p for p in select_problems(cfg, key)}

    def stage(name, fn, *args):  # noqa: ANN001, ANN202 - run once per run/arm/seed/round/stage, see resumable()
        return resumable(key, name, lambda: fn(*args))

    def sampled_and_verified(level: int, sampling_model: str, requests) -> list[dict]:  # noqa: ANN001
        if sharded(cfg):  # shards, each its own task run, here or on Ray (flows.scale)
            return sample_and_verify(cfg, key, problems, level, sampling_model, requests)
        rows = stage(f"sample-{level}", sample, cfg, key, sampling_model, quote(requests))
        return verify(cfg, key, quote(problems), quote(rows))

    attempts = stage("verify-0", sampled_and_verified, 0, model_ref, first_requests(cfg, list(problems.values())))
    latest = attempts
    for k in range(1, cfg.retry.max_retries + 1):
        failures = failed(cfg, latest)
        if not failures:
            break
        retry_model = retry_ref or model_ref
        notes = (stage(f"diagnose-{k}", diagnose, cfg, key, retry_model, quote(problems), quote(failures), k)
                 if _diagnoses(cfg) else None)  # fmt: skip
        requests = follow_ups(cfg, seed, round, problems, failures, k, notes)
        latest = stage(f"verify-{k}", sampled_and_verified, k, retry_model, requests)
        attempts = attempts + latest

    examples = stage("filter", filter_attempts, cfg, key, quote(problems), quote(attempts))
    start_ref = model_ref if cfg.train.init == "previous" else base_ref
    new_ref = stage("train", train, cfg, key, start_ref, quote(examples), quote(list(problems.values())))
    score = stage("evaluate", evaluate, cfg, [key], new_ref)

    retried = sum(a["attempt_idx"] > 0 for a in attempts)
    log.info(f"[{arm} seed={seed} round={round}] {len(attempts)} attempts ({retried} follow-ups), "
             f"{sum(a['passed'] for a in attempts)} passed, {len(examples)} SFT examples; eval pass@1 {score:.3f}")
    return new_ref


def _diagnoses(cfg: ExperimentConfig) -> bool:
    return cfg.retry.strategy == "retry" and cfg.retry.feedback == "self_diagnosis"
