"""Seconds per OPSD step vs per SFT step on the same tiny model and batch (CPU unless a GPU is present).

    python benchmarks/opsd_step.py [--batch 8] [--steps 10]

An OPSD step = on-policy rollouts (generation) + a student forward/backward + a teacher forward; an SFT
step = one forward/backward on (prompt, reference solution). Both use AdamW on the full model.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from domains import get_domain
from experiments.config import OPSDConfig, TinyModelConfig
from models.loading import load_model, load_tokenizer
from models.tiny import ensure_tiny_model
from models.training.opsd import opsd_loss, rollouts_for


def sft_step(model, tok, opt, texts: list[str], prompts: list[str]) -> None:
    tok.padding_side = "right"
    enc = tok([t + tok.eos_token for t in texts], return_tensors="pt", padding=True, add_special_tokens=False)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    for i, p in enumerate(prompts):  # completion-only loss, as SFT in pidistill
        labels[i, : len(tok(p, add_special_tokens=False)["input_ids"])] = -100
    loss = model(**enc, labels=labels).loss
    opt.zero_grad()
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    ref = str(ensure_tiny_model(TinyModelConfig()))
    domain = get_domain("arith")
    problems = domain.load("train", limit=args.batch)
    prompts = [domain.prompt(p) for p in problems]
    texts = [pr + p.solution for pr, p in zip(prompts, problems)]
    tok = load_tokenizer(ref)

    model = load_model(ref, device="cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sft_step(model, tok, opt, texts, prompts)  # warm-up
    t = time.perf_counter()
    for _ in range(args.steps):
        sft_step(model, tok, opt, texts, prompts)
    sft = (time.perf_counter() - t) / args.steps

    model = load_model(ref, device="cpu")
    teacher = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cfg = OPSDConfig(teacher="frozen")
    timings = {"rollout": 0.0, "loss+step": 0.0}
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        model.eval()
        rollouts = rollouts_for(model, tok, domain, problems, cfg, seed=step, max_new_tokens=48)
        t1 = time.perf_counter()
        model.train()
        loss = opsd_loss(model, teacher, tok, rollouts, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step:  # the first step is a warm-up
            timings["rollout"] += t1 - t0
            timings["loss+step"] += time.perf_counter() - t1
    opsd = sum(timings.values()) / args.steps
    print(f"tiny model, batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"  SFT step   {sft * 1000:8.1f} ms")
    print(
        f"  OPSD step  {opsd * 1000:8.1f} ms  (rollouts {timings['rollout'] / args.steps * 1000:.1f} ms, "
        f"student+teacher forward/backward {timings['loss+step'] / args.steps * 1000:.1f} ms)"
    )
    print(f"  OPSD / SFT = {opsd / sft:.1f}x")


if __name__ == "__main__":
    main()
