"""Multi-process training (`train.processes: N`): SFT and OPSD as `torchrun` children of the train task.

    result = launch("sft", payload, processes=8, work_dir=checkpoint.parent, log=log)

A round too slow on one GPU, or a model too big for one, trains over N processes (one per GPU; on a
CPU, N processes on the gloo backend). `train.strategy` says how they share the work:

    ddp           every process holds the whole model, its gradients and optimizer state; gradients are
                  averaged after each step (the fastest, when the model and AdamW's state fit one GPU)
    fsdp          parameters, gradients and optimizer state sharded over the processes (FSDP2 full shard,
                  what DeepSpeed calls ZeRO-3): Qwen3-8B full fine-tuning in fp32 master weights + AdamW
                  (~130 GB) is ~16 GB a GPU on 8 GPUs
    fsdp_grad_op  gradients and optimizer state sharded, parameters kept whole between forward and
                  backward (ZeRO-2): less communication, more memory

The train task pickles the payload (the examples or problems, the configs) into a folder beside the
checkpoint and runs

    python -m torch.distributed.run --standalone --nproc-per-node N -m tasks.train <spec.pkl>

Every rank runs the same training function (TRL and Accelerate read the ranks from torchrun's
environment; OPSD's loop wraps the student in DDP itself); each rank trains on its share of every
batch and gradients are averaged; rank 0 alone saves the checkpoint (in one rename, as in one
process) and pickles the result back. The children's output goes line by line into the task's log; a
child that dies (a crash, OOM, a kill) fails the task with the last lines of that output, and a
retried or resumed round trains again from the same start, as a one-process round does. If the task's
own process dies, the launcher is sent SIGTERM (Linux's parent-death signal) and stops its children:
no orphan keeps a GPU.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.children import run_child


class TrainingProcessFailed(RuntimeError):
    """A training child process exited with an error; the message ends with the tail of its output."""


def launch(
    kind: str, payload: dict[str, Any], processes: int, work_dir: Path, log: logging.Logger | logging.LoggerAdapter
):
    """Run `RANK_ENTRIES[kind](**payload)` (see `tasks.train`) in `processes` torchrun processes; rank 0's return
    value. The spec folder (under `work_dir`, beside the checkpoint) is removed whatever happens."""
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_dir = Path(tempfile.mkdtemp(prefix=f"{kind}.tmp-launch-", dir=work_dir))
    try:
        spec = spec_dir / "spec.pkl"
        # pickle, not JSON: configs, problems and rollouts go both ways between copies of this same code
        spec.write_bytes(pickle.dumps({"kind": kind, "payload": payload, "result": str(spec_dir / "result.pkl")}))
        args = [
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "tasks.train",  # whose __main__ is `run_rank` with the train task's entries and crash-test callbacks
            str(spec),
        ]
        code, tail = run_child(args, os.environ, lambda line: _log_line(log, line))
        if code != 0:
            raise TrainingProcessFailed(f"training processes exited with status {code}; their last output:\n{tail}")
        return pickle.loads((spec_dir / "result.pkl").read_bytes())
    finally:
        shutil.rmtree(spec_dir, ignore_errors=True)


def _log_line(log: logging.Logger | logging.LoggerAdapter, line: str) -> None:
    if line:
        log.info(f"[train] {line}")


def rank() -> int:
    """This process's rank among the training processes (0 when training in one process)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def run_rank(spec_path: str, entries: dict[str, Callable[..., Any]]) -> None:
    """One rank (torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, ...): pin its GPU, run the entry, and on rank 0
    write its result."""
    import torch

    spec = pickle.loads(Path(spec_path).read_bytes())
    if torch.cuda.is_available():  # each rank its own GPU: "cuda" then means cuda:LOCAL_RANK, not all on cuda:0
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    result = entries[spec["kind"]](**spec["payload"])
    if rank() == 0:
        Path(spec["result"]).write_bytes(pickle.dumps(result))
    # End without tearing anything down: a process group's destructor can deadlock against its own worker
    # threads (models/training/opsd.py, _KEPT); the result is written, and torchrun only needs the exit status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
