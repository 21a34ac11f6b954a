"""Multi-process training (`train.processes: N`): SFT as `torchrun` children of the train task.

    result = train_sft_processes(model_ref, examples, cfg, checkpoint, seed=..., device="cuda", processes=8, log=log)

A round too slow on one GPU trains data-parallel over N processes (one per GPU; on a CPU, N processes
on the gloo backend). Every process holds the whole model and its optimizer: a model too big for one
GPU needs sharded training (FSDP, ZeRO), which this is not. The train task
writes the examples and the arguments to a folder beside the checkpoint and runs

    python -m torch.distributed.run --standalone --nproc-per-node N -m tasks.train <spec.json>

Every rank runs `train_sft` (TRL and Accelerate read the ranks from torchrun's environment; each rank
trains on its share of every batch, `train.batch_size` per process, and gradients are averaged);
rank 0 alone saves the checkpoint (in one rename, as in one process) and writes the result. The
children's output goes line by line into the task's log; a child that dies (a crash, OOM, a kill)
fails the task with the last lines of that output, and a retried or resumed round trains again
from the same start, as a one-process round does. If the task's own process dies, the launcher is
sent SIGTERM (Linux's parent-death signal) and stops its children: no orphan keeps a GPU.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from experiments.config import TrainConfig
from models.training.sft import TrainResult, train_sft

TAIL_LINES = 60


class TrainingProcessFailed(RuntimeError):
    """A training child process exited with an error; the message ends with the tail of its output."""


def train_sft_processes(
    model_ref: str,
    examples: list[dict[str, Any]],
    cfg: TrainConfig,
    checkpoint: Path,
    seed: int,
    device: str,
    dtype: str,
    processes: int,
    log: logging.Logger | logging.LoggerAdapter,
) -> TrainResult:
    """`train_sft` over `processes` data-parallel processes (see the module docstring)."""
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    spec_dir = Path(tempfile.mkdtemp(prefix=f"{checkpoint.name}.tmp-launch-", dir=checkpoint.parent))
    try:
        (spec_dir / "examples.json").write_text(json.dumps(examples))
        spec = {
            "model_ref": model_ref,
            "train": cfg.model_dump(mode="json"),
            "checkpoint": str(checkpoint),
            "seed": seed,
            "device": device,
            "dtype": dtype,
            "examples": str(spec_dir / "examples.json"),
            "result": str(spec_dir / "result.json"),
        }
        (spec_dir / "spec.json").write_text(json.dumps(spec))
        argv = [
            sys.executable,
            "-c",
            _DIE_WITH_PARENT,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "tasks.train",  # whose __main__ is `run_rank` with the crash tests' callbacks
            str(spec_dir / "spec.json"),
        ]
        _run(argv, log)
        result = json.loads((spec_dir / "result.json").read_text())
        return TrainResult(**{**result, "losses": tuple(result["losses"])})
    finally:
        shutil.rmtree(spec_dir, ignore_errors=True)


def _run(argv: list[str], log: logging.Logger | logging.LoggerAdapter) -> None:
    """Run the launcher, its children's output streamed into `log`; raise with the output's tail on failure."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if line:
                log.info(f"[train] {line}")
        code = proc.wait()
    if code != 0:
        shown = "\n".join(tail)
        raise TrainingProcessFailed(f"training processes exited with status {code}; their last output:\n{shown}")


# Runs first in the launcher's process: SIGTERM when the task's process dies (even by SIGKILL), then exec
# the launcher (the signal survives exec). Not Popen's preexec_fn, which may deadlock in a threaded process.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "  # 1 = PR_SET_PDEATHSIG
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def run_rank(spec_path: str, callbacks: list | None = None) -> None:
    """One rank (torchrun sets RANK, WORLD_SIZE, ...): train, and on rank 0 write the result."""
    spec = json.loads(Path(spec_path).read_text())
    examples = json.loads(Path(spec["examples"]).read_text())
    result = train_sft(
        spec["model_ref"],
        examples,
        TrainConfig(**spec["train"]),
        Path(spec["checkpoint"]),
        seed=spec["seed"],
        device=spec["device"],
        dtype=spec["dtype"],
        callbacks=callbacks,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        Path(spec["result"]).write_text(json.dumps(asdict(result)))
