"""Supervised fine-tuning on accepted attempts with TRL's `SFTTrainer` (full or LoRA).

One training example, as the trainer sees it (loss on the completion only):

    {"prompt": "Question: What is 7 * 6 + 48?\\nAnswer:", "completion": " 7*6=42. 42+48=90. #### 90"}

or, for a chat model, TRL's conversational form (the template renders both turns, the loss is on the
assistant turn, its end-of-turn token included):

    {"prompt": [{"role": "user", "content": "What is 7 * 6 + 48?\\n\\n..."}],
     "completion": [{"role": "assistant", "content": "7*6=42 ... #### 90"}],
     "chat_template_kwargs": {"enable_thinking": False}}

Our config keeps only what pidistill decides (lr, epochs, batch, LoRA shape);
every other `trl.SFTConfig` argument passes through `train.sft_overrides`.
A LoRA adapter is merged into the weights before saving, so every round's
checkpoint is a plain model folder any sampler can load. Training keeps fp32
master weights whatever `model.dtype` says (bf16 is autocast on CUDA), and the
checkpoint is saved in fp32. The checkpoint is
written to a temp folder and renamed into place: it exists whole or not at all.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config import TrainConfig
from models.loading import load_model, load_tokenizer, resolve_device, resolve_dtype
from models.prompts import check_prompt_parity
from models.training.distributed import rank, world_size
from storage.writer import folder_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    checkpoint: str
    n_examples: int
    steps: int
    final_loss: float | None
    seconds: float
    losses: tuple[float, ...] = ()  # the loss logged at each step (averaged over processes)


def sft_config(cfg: TrainConfig, output_dir: Path, seed: int, device: str, dtype: str = "auto"):
    """TRL's config. The model is fp32 (master weights); `dtype` bf16/fp16 on CUDA is autocast (mixed precision)."""
    import torch
    from trl import SFTConfig

    compute = resolve_dtype(dtype, device)

    args: dict[str, Any] = dict(
        output_dir=str(output_dir),
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_length,
        completion_only_loss=True,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        bf16=device == "cuda" and compute == torch.bfloat16,
        fp16=device == "cuda" and compute == torch.float16,
        use_cpu=device == "cpu",
        # data-parallel processes on a CPU talk over gloo (NCCL is GPU-only)
        ddp_backend="gloo" if device == "cpu" and world_size() > 1 else None,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    if cfg.strategy != "ddp" and world_size() > 1:
        if device == "cpu":  # Accelerate runs FSDP on accelerators only: on a CPU it would quietly train DDP
            raise ValueError(f"train.strategy={cfg.strategy} needs GPUs; on a CPU use train.strategy=ddp")
        args.update(fsdp=True, fsdp_config=fsdp_config(cfg))
    args.update(cfg.sft_overrides)
    return SFTConfig(**args)


def fsdp_config(cfg: TrainConfig) -> dict[str, Any]:
    """Transformers' FSDP2 settings for `train.strategy`: each decoder layer is one shard unit (the model's
    `_no_split_modules`); reshard after forward = full shard (ZeRO-3), else parameters stay gathered until
    backward (ZeRO-2). The checkpoint is gathered whole (fp32) on rank 0, a plain model folder like any other."""
    return {
        "version": 2,
        "reshard_after_forward": cfg.strategy == "fsdp",
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "state_dict_type": "FULL_STATE_DICT",
    }


def _trl_example(example: dict[str, Any]) -> dict[str, Any]:
    """One example in TRL's form: text prompt/completion, or conversational when it has `messages`."""
    if "messages" not in example:
        return {"prompt": example["prompt"], "completion": example["completion"]}
    kwargs = {"chat_template_kwargs": example["chat_template_kwargs"]} if example.get("chat_template_kwargs") else {}
    return {
        "prompt": list(example["messages"]),
        "completion": [{"role": "assistant", "content": example["completion"]}],
        **kwargs,
    }


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def train_sft(
    model_ref: str,
    examples: list[dict[str, str]],
    cfg: TrainConfig,
    checkpoint: Path,
    seed: int,
    device: str = "auto",
    dtype: str = "auto",
    callbacks: list | None = None,
) -> TrainResult:
    """Fine-tune `model_ref` on prompt/completion `examples` (with `messages`: a chat model's conversation,
    whose rendering must give `prompt`); save the result at `checkpoint`.
    `callbacks`: extra `transformers.TrainerCallback`s (e.g. progress or fault injection)."""
    from datasets import Dataset
    from trl import SFTTrainer

    if not examples:
        raise ValueError("train_sft needs at least one example")
    device = resolve_device(device)
    started = time.time()
    tokenizer = load_tokenizer(model_ref)
    # the tokens trained on after a prompt are those sampled after it (raises on a drifted template)
    if merged := check_prompt_parity(tokenizer, examples):
        log.warning("%d of the first 16 examples start with text that merges into the prompt's last token", merged)
    tokenizer.padding_side = "right"
    # fp32 master weights whatever `dtype` says (it is the compute dtype: autocast on CUDA); a LoRA adapter
    # merges into fp32 weights too (merged into bf16 it lost most of the update), and the checkpoint stays
    # fp32 so the next round continues from the exact weights (samplers load it in `dtype`).
    model = load_model(model_ref, device=device, dtype="float32")
    # One of several training processes (models/training/distributed.py): rank 0 alone saves.
    saving = folder_atomic(checkpoint) if rank() == 0 else tempfile.TemporaryDirectory(prefix=f"rank{rank()}-")
    with saving as work_dir:
        work = Path(work_dir)
        trainer = SFTTrainer(
            model=model,
            args=sft_config(cfg, work / "trainer", seed, device, dtype),
            train_dataset=Dataset.from_list([_trl_example(e) for e in examples]),
            processing_class=tokenizer,
            peft_config=lora_config(cfg) if cfg.peft == "lora" else None,
            callbacks=callbacks,
        )
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # per-step dicts on stdout; losses are in log_history
        output = trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        trained: Any = trainer.model  # a PeftModel under LoRA, else the PreTrainedModel
        state = None
        if trainer.is_fsdp_enabled:  # every rank gathers its shards (a collective): rank 0 gets whole fp32 weights
            state = trainer.accelerator.get_state_dict(trainer.model)
            trained = trainer.accelerator.unwrap_model(trainer.model)
        if cfg.peft == "lora":
            trained = trained.merge_and_unload()
        shutil.rmtree(work / "trainer", ignore_errors=True)
        if rank() == 0:
            trained.save_pretrained(work, state_dict=state)
            tokenizer.padding_side = "left"
            tokenizer.save_pretrained(work)
    final_loss = losses[-1] if losses else output.training_loss
    return TrainResult(
        checkpoint=str(checkpoint),
        n_examples=len(examples),
        steps=int(output.global_step),
        final_loss=None if final_loss is None or math.isnan(final_loss) else float(final_loss),
        seconds=round(time.time() - started, 3),
        losses=tuple(float(x) for x in losses),
    )
