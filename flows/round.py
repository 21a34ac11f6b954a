"""One round: sample -> verify -> filter -> train -> evaluate. Wiring only."""

from __future__ import annotations

from prefect import flow, get_run_logger

from experiments.config import ExperimentConfig
from storage.writer import home_dir
from tasks.common import RoundKey, train_problems
from tasks.evaluate import evaluate
from tasks.filter import filter_attempts
from tasks.sample import first_requests, sample
from tasks.train import train
from tasks.verify import verify


@flow(name="round", flow_run_name="{arm} seed={seed} round={round}")
def round_flow(cfg: ExperimentConfig, run_id: str, arm: str, seed: int, round: int, model_ref: str, base_ref: str) -> str:
    """Run one round of arm `arm` from `model_ref`; returns the model the next round starts from."""
    log = get_run_logger()
    key = RoundKey(run_id, arm, seed, round, str(home_dir()))
    problems = train_problems(cfg, seed)
    by_id = {p.problem_id: p for p in problems}

    attempts = verify(cfg, by_id, sample(cfg, key, model_ref, first_requests(cfg, problems)))
    examples = filter_attempts(cfg, key, by_id, attempts)
    init_ref = model_ref if cfg.train.init == "previous" else base_ref
    new_ref = train(cfg, key, init_ref, examples)
    score = evaluate(cfg, [key], new_ref)

    passed = sum(a["passed"] for a in attempts)
    log.info(f"[{arm} seed={seed} round={round}] {len(attempts)} attempts, {passed} passed, "
             f"{len(examples)} SFT examples; eval pass@1 {score:.3f}")
    return new_ref
