"""On-policy self-distillation (OPSD): one model is both student and teacher.

Each step, for a batch of problems:

    student prompt  "Question: What is 8 * 8 + 67?\\nAnswer:"                      -> the student samples y
    teacher prompt  "Question: ...\\nHere is a reference solution: ...\\nAnswer:"   (same weights, + PI)
    loss            mean over y's tokens of D(student(. | x, y<t), teacher(. | x+PI, y<t))

The completion y is tokenised once and appended to both prompts, so student and
teacher logits are aligned token by token. For a chat model both prompts are
rendered by the same template with the same kwargs (`models.prompts`): the
teacher's one user turn is the student's with the PI block after the problem.
The teacher runs without gradient: `live` uses the student's current weights,
`frozen` a copy of the starting weights, `ema` an exponential moving average of
the student. D is reverse KL, forward KL or JSD(beta), over the full vocabulary
or the student's top-k tokens plus a tail bucket (TRL's self-distillation loss functions, `trl.experimental.sdpo`).
The PI kinds are the retry catalog's (`domains.pi.make_pi`): "OPSD with gibberish
PI" is `train.opsd.pi: gibberish`. With `verifier_feedback` the teacher sees the
verdict on the student's own rollout (SDPO).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from trl.experimental.sdpo.loss_utils import (
    compute_full_logit_self_distillation_loss,
    compute_topk_self_distillation_loss,
)

from domains import Domain, Problem
from domains.pi import first_messages, make_pi
from domains.thinking import check_answers
from experiments.config import OPSDConfig, TrainConfig
from models.loading import autocast, load_model, load_tokenizer, resolve_device
from models.prompts import PromptStyle, prompt_ids, prompt_style, render
from models.sampling.base import Completion
from models.sampling.hf import HFSampler
from models.training.distributed import rank, world_size
from models.training.sft import TrainResult, lora_config
from storage.writer import folder_atomic

# divergence name -> TRL's alpha: 0 = KL(teacher || student), 1 = KL(student || teacher)
_ALPHA = {"forward_kl": 0.0, "reverse_kl": 1.0}


@dataclass
class Rollout:
    problem: Problem
    student_prompt: str
    teacher_prompt: str
    pi_kind: str
    pi_text: str
    completion: str
    completion_ids: list[int]  # what the loss scores: the completion's text tokenized, then eos
    n_prompt_tokens: int
    sampled: Completion | None = None  # the student's completion as sampled (its token ids, seed: provenance)


def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, cfg: OPSDConfig) -> torch.Tensor:
    """Per-token divergence, shape (batch, tokens)."""
    alpha = _ALPHA.get(cfg.divergence, cfg.beta)
    if cfg.topk:
        return compute_topk_self_distillation_loss(
            student_logits,
            teacher_logits,
            distillation_topk=cfg.topk,
            distillation_alpha=alpha,
            distillation_add_tail=True,
        )
    return compute_full_logit_self_distillation_loss(student_logits, teacher_logits, distillation_alpha=alpha)


def input_rows(tokenizer, prompts: list[str], completions: list[list[int]]) -> list[list[int]]:
    """Each prompt's tokens followed by its completion's: the completion is tokenized once (its ids are
    appended, never its text re-tokenized with the prompt), so student and teacher score the same tokens
    even where the completion's first characters would merge with the end of one prompt and not the other."""
    return [prompt_ids(tokenizer, p) + c for p, c in zip(prompts, completions)]


def _completion_logits(
    model, tokenizer, prompts: list[str], completions: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits predicting each completion token after its prompt: (batch, max_len, vocab) and a mask."""
    device = next(model.parameters()).device
    rows = input_rows(tokenizer, prompts, completions)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    attn = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    logits = model(input_ids=ids, attention_mask=attn).logits
    n = max(len(c) for c in completions)
    out = logits.new_zeros((len(rows), n, logits.shape[-1]))
    mask = torch.zeros((len(rows), n), dtype=torch.bool, device=device)
    for i, (r, c) in enumerate(zip(rows, completions)):
        start = len(r) - len(c) - 1  # the logit at position t predicts token t + 1
        out[i, : len(c)] = logits[i, start : start + len(c)]
        mask[i, : len(c)] = True
    return out, mask


def opsd_loss(student, teacher, tokenizer, rollouts: list[Rollout], cfg: OPSDConfig) -> torch.Tensor:
    """Mean per-token divergence over the rollouts' completion tokens; gradients reach the student only."""
    completions = [r.completion_ids for r in rollouts]
    s_logits, mask = _completion_logits(student, tokenizer, [r.student_prompt for r in rollouts], completions)
    with torch.no_grad():
        t_logits, _ = _completion_logits(teacher, tokenizer, [r.teacher_prompt for r in rollouts], completions)
    per_token = divergence(s_logits, t_logits.detach(), cfg)
    return (per_token * mask).sum() / mask.sum().clamp_min(1)


def _ema_update(teacher, student, decay: float) -> None:
    """Move the teacher's copy of each trained parameter towards the student's, matched by name (the teacher is
    a copy of the student, LoRA layers included); frozen weights are the same in both and stay."""
    theirs = dict(teacher.named_parameters())
    with torch.no_grad():
        for name, s in student.named_parameters():
            if s.requires_grad:
                theirs[name].mul_(decay).add_(s.detach(), alpha=1 - decay)


def rollouts_for(
    student,
    tokenizer,
    domain: Domain,
    problems: list[Problem],
    cfg: OPSDConfig,
    seed: int,
    max_new_tokens: int,
    style: PromptStyle | None = None,
) -> list[Rollout]:
    """Sample one on-policy completion per problem and build its teacher prompt (both rendered in `style`,
    default: how `tokenizer` prompts, chat when it has a template)."""
    style = style or prompt_style(tokenizer)
    sampler = HFSampler.from_model(student, tokenizer, model_ref="student", batch_size=len(problems))
    prompts = [render(tokenizer, style, domain.prompt(p), first_messages(domain, p)) for p in problems]
    stop = domain.chat_stop if style.chat else domain.stop
    outs = sampler.generate(
        prompts, n=1, temperature=cfg.rollout_temperature, max_new_tokens=max_new_tokens, stop=stop, seed=seed
    )
    texts = [o[0].text for o in outs]
    verdicts = check_answers(domain, problems, texts) if cfg.pi == "verifier_feedback" else [None] * len(problems)
    rollouts = []
    for p, prompt, o, text, v in zip(problems, prompts, outs, texts, verdicts):
        pi = make_pi(
            cfg.pi,
            domain,
            p,
            problems,
            random.Random(f"{seed}:{p.problem_id}"),
            completion=text,
            feedback=v.feedback if v else "",
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        teacher = render(tokenizer, style, domain.prompt(p, pi), first_messages(domain, p, pi))
        rollouts.append(Rollout(p, prompt, teacher, pi.kind, pi.text, text, ids, o[0].n_prompt_tokens, o[0]))
    return rollouts


def train_opsd(
    model_ref: str,
    problems: list[Problem],
    domain: Domain,
    cfg: TrainConfig,
    checkpoint,
    seed: int,
    max_new_tokens: int,
    device: str = "auto",
    dtype: str = "auto",
    on_rollouts: Callable[[int, list[Rollout]], None] | None = None,
    style: PromptStyle | None = None,
) -> TrainResult:
    """Run OPSD from `model_ref` on `problems`; save the student at `checkpoint` (LoRA merged).

    In one of several training processes (`train.processes`, torchrun's environment): each step's batch is
    the same on every rank, each rank rolls out and scores its share of it, DDP averages the gradients,
    rank 0 gets every rank's rollouts (`on_rollouts`, in batch order) and alone saves the checkpoint."""
    o = cfg.opsd
    device = resolve_device(device)
    started = time.time()
    torch.manual_seed(seed)
    world, me = world_size(), rank()
    if world > 1 and min(o.batch_size, len(problems)) < world:
        raise ValueError(
            f"OPSD over {world} processes needs at least {world} problems a step (train.opsd.batch_size="
            f"{o.batch_size}, {len(problems)} problems): every process trains on its share of each batch"
        )
    tokenizer = load_tokenizer(model_ref)
    # fp32 master weights (bf16 autocast on CUDA), as SFT: bf16 weights round small updates away
    student: Any = load_model(model_ref, device=device, dtype="float32")  # a PeftModel under LoRA
    if cfg.peft == "lora":
        from peft import get_peft_model

        student = get_peft_model(student, lora_config(cfg))
    # A copy of the (adapted) student: frozen, it is the starting weights (a new LoRA adds zero); under ema its
    # adapter follows the student's. A live teacher is the student itself.
    teacher = student if o.teacher == "live" else copy.deepcopy(student).eval().requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    trained = _data_parallel(student, device) if world > 1 else student  # the student as the loss calls it
    steps = o.steps or max(1, math.ceil(cfg.epochs * len(problems) / o.batch_size))
    order = random.Random(seed)
    losses: list[float] = []
    for step in range(steps):
        batch = order.sample(problems, min(o.batch_size, len(problems)))  # the same on every rank
        student.eval()
        # rank 0 draws with the one-process seed; the others with their own
        rollout_seed = seed * 100_003 + step + me * 1_000_003
        rollouts = rollouts_for(student, tokenizer, domain, batch[me::world], o, rollout_seed, max_new_tokens, style)
        everyone = _gather_rollouts(rollouts, world) if world > 1 else rollouts
        if on_rollouts and me == 0:
            on_rollouts(step, everyone)
        student.train()
        with autocast(dtype, device):
            loss = opsd_loss(trained, teacher, tokenizer, rollouts, o)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: the gradients averaged over the ranks
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if o.teacher == "ema":
            _ema_update(teacher, student, o.ema_decay)
        losses.append(_mean_over_ranks(loss.detach(), world))
    saved = student.merge_and_unload() if cfg.peft == "lora" else student
    if me == 0:
        with folder_atomic(checkpoint) as work:
            saved.save_pretrained(work)
            tokenizer.save_pretrained(work)
    if world > 1:  # never torn down here: the rank's process ends with os._exit (distributed.run_rank)
        _KEPT.append(trained)
    return TrainResult(
        str(checkpoint),
        steps * min(o.batch_size, len(problems)),
        steps,
        losses[-1] if losses else None,
        round(time.time() - started, 3),
        tuple(losses),
    )


# The DDP student of a training process, kept alive until the process ends. Freeing it tears down gloo's process
# group, whose destructor joins its worker threads while holding the GIL, and a worker still releasing a finished
# all-reduce's tensors waits for the GIL: a deadlock (seen in about 1 of 3 two-process runs).
_KEPT: list = []


def _data_parallel(student, device: str):
    """The student wrapped in DDP over torchrun's processes (gloo on a CPU, NCCL on GPUs); the teacher and the
    rollouts use the bare module (no gradient, nothing to synchronise)."""
    from torch.nn.parallel import DistributedDataParallel

    torch.distributed.init_process_group(backend="gloo" if device == "cpu" else "nccl")
    if device == "cpu":
        return DistributedDataParallel(student)
    return DistributedDataParallel(student, device_ids=[torch.cuda.current_device()])


def _gather_rollouts(mine: list[Rollout], world: int) -> list[Rollout]:
    """Every rank's rollouts on rank 0, in the batch's order (rank r rolled out problems r, r + world, ...)."""
    parts: list[list[Rollout]] | None = [[] for _ in range(world)] if rank() == 0 else None
    torch.distributed.gather_object(mine, parts, dst=0)
    if parts is None:
        return []
    return [parts[j % world][j // world] for j in range(sum(len(p) for p in parts))]


def _mean_over_ranks(loss: torch.Tensor, world: int) -> float:
    if world > 1:
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        loss /= world
    return loss.item()
