"""An experiment: the base model's evaluation (round 0), then every arm x seed chain of rounds. Wiring only."""

from __future__ import annotations

from prefect import flow

from experiments.config import ExperimentConfig
from experiments.config import smoke as scale_down
from flows.chains import run_chains
from flows.round import round_flow
from flows.scale import scaled
from storage.home import home_dir
from tasks.evaluate import evaluate_base_models
from tasks.keys import RoundKey
from tasks.report import publish_report
from tasks.resume import resumable
from tasks.runs import new_run_id, resolve_model, retry_model_config, run_lifecycle


@flow(name="experiment", flow_run_name="{config.name}")
def experiment_flow(config: ExperimentConfig, run_id: str | None = None, smoke: bool = False) -> list[dict]:
    """Run `config`; returns the per-arm table (Δpp vs base with 95% CI, base and final pass@1) as records.

    With the `run_id` of an existing run (same config), the run is resumed: stages it completed
    are skipped, what a killed process left half-written is discarded (see `tasks.resume.resumable`).

    Args:
        config: The experiment: domain, model, sampling, retry, filter, training, evaluation, rounds,
            seeds and arms (each arm: a name and dotted overrides of the rest).
        run_id: Leave empty for a new run (named after the experiment and the time); the id of an
            existing run resumes it.
        smoke: Run the config at micro scale on CPU (tiny model, few problems, one seed), as
            `pidistill run <preset> --smoke` does: a check that it runs, not the experiment's numbers.
    """
    config = scale_down(config) if smoke else config
    run_id = run_id or new_run_id(config.name)
    with run_lifecycle(config, run_id):
        if config.scale.chains == 1:
            for seed in config.seeds:
                evaluate_base_models(config, run_id, seed)
                for arm in config.arms:
                    run_chain(config.for_arm(arm.name), run_id, arm.name, seed)
        else:  # round 0 of every seed, then the chains, up to scale.chains at once (flows/chains.py)
            for seed in config.seeds:
                evaluate_base_models(config, run_id, seed)
            run_chains(config, run_id, [(arm.name, seed) for seed in config.seeds for arm in config.arms])
    return publish_report(run_id, config.tracking)


def run_chain(cfg: ExperimentConfig, run_id: str, arm: str, seed: int) -> None:
    """Rounds 1..R of one arm and seed, each from the model the round before returned."""
    base_ref = model_ref = resolve_model(cfg.model)
    retry_cfg = retry_model_config(cfg)
    retry_ref = resolve_model(retry_cfg) if retry_cfg else None
    for r in range(1, cfg.rounds + 1):
        key = RoundKey(run_id, arm, seed, r, str(home_dir()))
        model_ref = resumable(
            key, "round", scaled(round_flow, cfg), cfg, run_id, arm, seed, r, model_ref, base_ref, retry_ref
        )
