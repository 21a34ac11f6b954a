"""An experiment: every arm x seed x round, plus the base model's evaluation (round 0). Wiring only."""

from __future__ import annotations

import json

from prefect import flow, get_run_logger

from experiments.config import ExperimentConfig
from flows.round import round_flow
from storage.writer import home_dir
from tasks.common import RoundKey, now
from tasks.evaluate import evaluate
from tasks.report import publish_report
from tasks.runs import new_run_id, preflight, resolve_model, retry_model_config, write_run


def _base_eval_groups(config: ExperimentConfig) -> dict[str, list[str]]:
    """Arms whose base model and evaluation coincide share one round-0 evaluation."""
    groups: dict[str, list[str]] = {}
    for arm in config.arms:
        c = config.for_arm(arm.name)
        signature = json.dumps([c.model.model_dump(), c.eval.model_dump(), c.domain.model_dump(),
                                c.sampling.top_p, c.sampling.max_new_tokens], sort_keys=True)
        groups.setdefault(signature, []).append(arm.name)
    return groups


@flow(name="experiment", flow_run_name="{config.name}")
def experiment_flow(config: ExperimentConfig, run_id: str | None = None) -> list[dict]:
    """Run `config`; returns the per-arm table (Δpp vs base with 95% CI, base and final pass@1) as records."""
    log = get_run_logger()
    preflight(config)
    run_id = run_id or new_run_id(config.name)
    home, started = str(home_dir()), now()
    write_run(config, run_id, "running", started)
    try:
        for seed in config.seeds:
            for arms in _base_eval_groups(config).values():
                cfg = config.for_arm(arms[0])
                base_ref = resolve_model(cfg.model)
                score = evaluate(cfg, [RoundKey(run_id, a, seed, 0, home) for a in arms], base_ref)
                log.info(f"[seed={seed}] base model pass@1 {score:.3f} (arms {', '.join(arms)})")
            for arm in config.arms:
                cfg = config.for_arm(arm.name)
                base_ref = model_ref = resolve_model(cfg.model)
                retry_cfg = retry_model_config(cfg)
                retry_ref = resolve_model(retry_cfg) if retry_cfg else None
                for r in range(1, cfg.rounds + 1):
                    model_ref = round_flow(cfg, run_id, arm.name, seed, r, model_ref, base_ref, retry_ref)
    except BaseException as exc:
        write_run(config, run_id, "failed", started, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    write_run(config, run_id, "completed", started)
    table = publish_report(run_id)
    log.info(f"run {run_id} completed; report in {home}/{run_id}/report/report.html")
    return table
