"""Stage `train`: fine-tune on the round's SFT examples, or run OPSD on its problems; one `trainings` row.

`train.method: none` (a control arm) and SFT rounds with fewer than
`train.min_examples` examples keep the model as it is, and say so in the row
(steps = 0, checkpoint = the unchanged model). OPSD's student rollouts are
stored as attempts with phase = 'opsd', their PI and the teacher's prompt.
Infrastructure failures (OOM, a crashed worker) are retried by Prefect; bad data is not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from domains import Problem
from experiments.config import ExperimentConfig
from storage.schema import Attempt
from tasks.domain import domain_of
from tasks.failures import retry_on_infrastructure
from tasks.keys import RoundKey, attempt_id, derive_seed
from tasks.metering import metered, now
from tasks.resume import fault_point
from tasks.shards import stage_threads


def checkpoint_dir(key: RoundKey) -> Path:
    return Path(key.home) / key.run_id / "checkpoints" / f"arm={key.arm}" / f"seed={key.seed}" / f"round={key.round}"


@task(name="train", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_on_infrastructure, cache_policy=NO_CACHE)
def train(
    cfg: ExperimentConfig,
    key: RoundKey,
    model_ref: str,
    base_ref: str,
    examples: list[dict],
    problems: dict[str, Problem],
) -> str:
    """Train from the previous round's model `model_ref` or the base model `base_ref` (`train.init`);
    returns the model the next stage uses (a new checkpoint, or the start model when nothing trained)."""
    from models.sampling import release_samplers

    t = cfg.train
    model_ref = model_ref if t.init == "previous" else base_ref
    row = {
        **key.columns(),
        "method": t.method,
        "init_model_ref": model_ref,
        "n_examples": 0,  # what a trainer saw: none unless one trains below
        "steps": 0,
        "lr": t.lr,
        "final_loss": None,
        "checkpoint": model_ref,
        "seconds": 0.0,
    }
    with metered(key, "train", 0, model_ref) as m, stage_threads(cfg.scale):
        result = None
        if sft_trains(cfg, len(examples)):
            release_samplers()  # free the sampler's (GPU) memory before training
            sft: dict[str, Any] = {
                "model_ref": model_ref,
                "examples": trainer_examples(cfg, model_ref, examples, problems),
                "cfg": t,
                "checkpoint": checkpoint_dir(key),
                "seed": derive_seed(key.seed, key.round, "train"),
                "device": cfg.model.device,
                "dtype": cfg.model.dtype,
            }
            result = _in_processes(cfg, key, "sft", sft) if t.processes > 1 else _sft(**sft)
        elif t.method == "opsd":
            release_samplers()
            result = _opsd(cfg, key, model_ref, list(problems.values()))
        if result is not None:
            row.update(
                n_examples=result.n_examples,
                steps=result.steps,
                final_loss=result.final_loss,
                checkpoint=result.checkpoint,
                seconds=result.seconds,
            )
        key.write("trainings", "train", [row])
        m["n_items"] = row["n_examples"]
    return row["checkpoint"]


def sft_trains(cfg: ExperimentConfig, n_examples: int) -> bool:
    """Whether this round's SFT trains on its `n_examples` accepted examples (else the model stays as it is)."""
    return cfg.train.method == "sft" and n_examples >= max(1, cfg.train.min_examples)


def trainer_examples(
    cfg: ExperimentConfig, model_ref: str, examples: list[dict], problems: dict[str, Problem]
) -> list[dict]:
    """The SFT examples as the trainer takes them. A chat model trains in TRL's conversational form: the
    problem's first user turn (rebuilt from the problem, rendered by TRL with the same template kwargs;
    the parity check compares it with the stored prompt, i.e. what the sampler gave the model) and the
    completion as the assistant turn, the loss on that turn only."""
    from domains.pi import first_messages
    from models.loading import load_tokenizer
    from tasks.sample import style_of

    style = style_of(cfg, load_tokenizer(model_ref))
    if not style.chat:
        return [{"prompt": e["prompt"], "completion": e["completion"]} for e in examples]
    domain = domain_of(cfg)
    kwargs = {"chat_template_kwargs": dict(style.template_kwargs)} if style.template_kwargs else {}
    return [
        {
            "prompt": e["prompt"],
            "messages": list(first_messages(domain, problems[e["problem_id"]])),
            "completion": e["completion"],
            **kwargs,
        }
        for e in examples
    ]


def fault_callbacks() -> list:
    """Crash tests (PIDISTILL_FAULT_KILL_AT=train): die after a training step, mid-checkpoint."""
    import os

    if "train" not in os.environ.get("PIDISTILL_FAULT_KILL_AT", ""):
        return []
    from transformers import TrainerCallback

    class _Fault(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            fault_point("train")

    return [_Fault()]


def _in_processes(cfg: ExperimentConfig, key: RoundKey, kind: str, payload: dict):
    """Rank 0's result of `RANK_ENTRIES[kind](**payload)` over `train.processes` torchrun processes."""
    from models.training.distributed import launch
    from tasks.runs import run_logger

    return launch(kind, payload, cfg.train.processes, checkpoint_dir(key).parent, run_logger())


def _sft(**kwargs):
    from models.training.sft import train_sft

    return train_sft(**kwargs, callbacks=fault_callbacks())


def _opsd(cfg: ExperimentConfig, key: RoundKey, model_ref: str, problems: list[Problem]):
    from tasks.sample import provenance
    from tasks.verify import verify_rows

    opsd: dict[str, Any] = {
        "cfg": cfg,
        "model_ref": model_ref,
        "problems": problems,
        "checkpoint": checkpoint_dir(key),
        "seed": derive_seed(key.seed, key.round, "opsd"),
    }
    result, rollouts = _in_processes(cfg, key, "opsd", opsd) if cfg.train.processes > 1 else _opsd_rank(**opsd)
    attempts = [
        Attempt(
            **key.columns(),
            phase="opsd",
            problem_id=r.problem.problem_id,
            attempt_id=attempt_id(*key.columns().values(), "opsd", step, i, r.problem.problem_id),
            attempt_idx=0,
            sample_idx=step,
            model_ref=f"{model_ref}@opsd-step-{step}",
            sampler="hf",
            temperature=cfg.train.opsd.rollout_temperature,
            pi_kind=r.pi_kind,
            pi_text=r.pi_text,
            prompt=r.student_prompt,
            teacher_prompt=r.teacher_prompt,
            completion=r.completion,
            n_prompt_tokens=r.n_prompt_tokens,
            # tokens sampled, as every attempt counts them (the loss scores completion_ids: the text + eos)
            n_completion_tokens=r.sampled.n_completion_tokens if r.sampled else len(r.completion_ids),
            created_at=created,
            # The student's sampling, as any attempt's; no policy_digest: its weights at this step are not
            # saved (model_ref names the step), so a rollout can be re-scored but not re-sampled.
            **(provenance(r.sampled, None) if r.sampled else {}),
        )
        for step, created, step_rollouts in rollouts
        for i, r in enumerate(step_rollouts)
    ]
    verified = verify_rows(cfg, {p.problem_id: p for p in problems}, attempts)  # for the record: do rollouts improve?
    key.write("attempts", "opsd", verified)  # no decision: rollouts are not filtered
    return result


def _opsd_rank(cfg: ExperimentConfig, model_ref: str, problems: list[Problem], checkpoint: Path, seed: int):
    """OPSD in this process (one of `train.processes` or the only one): the result, and on rank 0 the student's
    rollouts as (step, time, rollouts)."""
    from models.loading import load_tokenizer
    from models.training.opsd import train_opsd
    from tasks.sample import style_of

    rollouts: list = []
    result = train_opsd(
        model_ref,
        problems,
        domain_of(cfg),
        cfg.train,
        checkpoint,
        seed=seed,
        max_new_tokens=cfg.train.opsd.max_new_tokens or cfg.sampling.max_new_tokens,
        device=cfg.model.device,
        dtype=cfg.model.dtype,
        on_rollouts=lambda step, rs: rollouts.append((step, now(), rs)),
        style=style_of(cfg, load_tokenizer(model_ref)),
    )
    return result, rollouts


# What a training process runs (models/training/distributed.py `launch`): its kind -> function of the payload.
RANK_ENTRIES: dict[str, Callable[..., Any]] = {"sft": _sft, "opsd": _opsd_rank}


if __name__ == "__main__":  # one rank of `train.processes` > 1 (models/training/distributed.py)
    import sys

    from models.training.distributed import run_rank

    run_rank(sys.argv[1], RANK_ENTRIES)
