"""Stage `train`: fine-tune on the round's SFT examples; one `trainings` row per round.

`train.method: none` (a control arm) and rounds with fewer than
`train.min_examples` examples keep the model as it is, and say so in the row
(steps = 0, checkpoint = the unchanged model). Infrastructure failures (OOM,
a crashed worker) are retried by Prefect; bad data is not.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from experiments.config import ExperimentConfig
from storage.writer import write_rows
from tasks.common import RoundKey, derive_seed


def checkpoint_dir(key: RoundKey) -> Path:
    return Path(key.home) / key.run_id / "checkpoints" / f"arm={key.arm}" / f"seed={key.seed}" / f"round={key.round}"


@task(name="train", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def train(cfg: ExperimentConfig, key: RoundKey, model_ref: str, examples: list[dict]) -> str:
    """Returns the model the next stage uses (a new checkpoint, or `model_ref` when nothing trained)."""
    t = cfg.train
    row = {**key.columns(), "method": t.method, "init_model_ref": model_ref, "n_examples": len(examples),
           "steps": 0, "lr": t.lr, "final_loss": None, "checkpoint": model_ref, "seconds": 0.0}
    if t.method == "sft" and len(examples) >= max(1, t.min_examples):
        from models.sampling import release_samplers
        from models.training.sft import train_sft

        release_samplers()  # free the sampler's (GPU) memory before training

        result = train_sft(
            model_ref, examples, t, checkpoint_dir(key), seed=derive_seed(key.seed, key.round, "train"),
            device=cfg.model.device, dtype=cfg.model.dtype,
        )
        row.update(steps=result.steps, final_loss=result.final_loss, checkpoint=result.checkpoint, seconds=result.seconds)
    elif t.method == "opsd":
        raise NotImplementedError("train.method=opsd: the OPSD trainer is not built yet")
    write_rows(key.path("trainings", "train"), [row], "trainings")
    return row["checkpoint"]
