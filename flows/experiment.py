"""An experiment: every arm x seed x round, plus the base model's evaluation (round 0). Wiring only."""

from __future__ import annotations

import json

from prefect import flow, get_run_logger

from experiments.config import ExperimentConfig
from flows.round import round_flow
from flows.scale import scaled
from storage.writer import home_dir, sweep_temp_files
from tasks.common import RoundKey, now, resumable
from tasks.evaluate import evaluate
from tasks.report import publish_report
from tasks.runs import check_resumable, new_run_id, preflight, resolve_model, retry_model_config, run_lock, write_run


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
    """Run `config`; returns the per-arm table (Δpp vs base with 95% CI, base and final pass@1) as records.

    With the `run_id` of an existing run (same config), the run is resumed: stages it completed
    are skipped, what a killed process left half-written is discarded (see `tasks.common.resumable`).

    Args:
        config: The experiment: domain, model, sampling, retry, filter, training, evaluation, rounds,
            seeds and arms (each arm: a name and dotted overrides of the rest).
        run_id: Leave empty for a new run (named after the experiment and the time); the id of an
            existing run resumes it.
    """
    log = get_run_logger()
    preflight(config)
    run_id = run_id or new_run_id(config.name)
    home = str(home_dir())
    with run_lock(run_id):
        previous = check_resumable(config, run_id)
        started = previous["started_at"] if previous else now()
        if previous:
            swept = sweep_temp_files(home_dir() / run_id)
            log.info(f"resuming run {run_id} (was {previous['status']}); discarded {len(swept)} partial files")
        write_run(config, run_id, "running", started)
        try:
            _run_all(config, run_id, home)
        except BaseException as exc:
            write_run(config, run_id, "failed", started, error=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        write_run(config, run_id, "completed", started)
    table = publish_report(run_id)
    log.info(f"run {run_id} completed; report in {home}/{run_id}/report/report.html")
    return table


def _run_all(config: ExperimentConfig, run_id: str, home: str) -> None:
    log = get_run_logger()
    for seed in config.seeds:
        for arms in _base_eval_groups(config).values():
            cfg = config.for_arm(arms[0])
            keys = [RoundKey(run_id, a, seed, 0, home) for a in arms]
            base_ref = resolve_model(cfg.model)
            score = resumable(keys[0], "evaluate", lambda: evaluate(cfg, keys, base_ref))
            log.info(f"[seed={seed}] base model pass@1 {score:.3f} (arms {', '.join(arms)})")
        for arm in config.arms:
            cfg = config.for_arm(arm.name)
            base_ref = model_ref = resolve_model(cfg.model)
            retry_cfg = retry_model_config(cfg)
            retry_ref = resolve_model(retry_cfg) if retry_cfg else None
            for r in range(1, cfg.rounds + 1):
                key = RoundKey(run_id, arm.name, seed, r, home)
                model_ref = resumable(key, "round", lambda: scaled(round_flow, cfg)(cfg, run_id, arm.name, seed, r,
                                                                                     model_ref, base_ref, retry_ref))  # fmt: skip
