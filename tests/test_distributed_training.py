"""Multi-process training (`train.processes`, models/training/distributed.py): SFT in 2 torchrun processes on
the gloo backend, against one process with twice the batch; a killed child fails cleanly and trains again."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from domains import get_domain
from experiments.config import TrainConfig, load_config
from models.training.distributed import TrainingProcessFailed, train_sft_processes
from models.training.sft import train_sft
from tasks.runs import PreflightError, preflight

log = logging.getLogger("test")


def _examples(n: int = 32) -> list[dict]:
    d = get_domain("arith")
    return [{"prompt": d.prompt(p), "completion": p.solution} for p in d.load("train", limit=n)]


@pytest.mark.slow
def test_two_processes_of_batch_b_train_like_one_of_batch_2b(tiny_model: Path, tmp_path: Path, capsys):
    """Data-parallel SFT averages the two processes' gradients over their halves of each global batch, so its
    loss curve follows one process's at twice the batch (not exactly in general: each process averages over
    its own completion tokens)."""
    from safetensors.torch import load_file

    examples = _examples()
    t = time.perf_counter()
    one = train_sft(
        str(tiny_model), examples, TrainConfig(lr=1e-3, epochs=2, batch_size=8), tmp_path / "one", 0, device="cpu"
    )
    one_s = time.perf_counter() - t
    t = time.perf_counter()
    two = train_sft_processes(
        str(tiny_model),
        examples,
        TrainConfig(lr=1e-3, epochs=2, batch_size=4, processes=2),
        tmp_path / "two",
        seed=0,
        device="cpu",
        dtype="auto",
        processes=2,
        log=log,
    )
    two_s = time.perf_counter() - t
    print(f"1 process x batch 8: {one_s:.1f} s; 2 processes x batch 4: {two_s:.1f} s")

    assert two.steps == one.steps == 8 and two.n_examples == one.n_examples == 32
    assert len(two.losses) == len(one.losses) == 8
    # Measured: equal to 4 decimals at every step (the global batches hold the same examples here).
    assert two.losses == pytest.approx(one.losses, rel=0.02)
    a, b, start = (load_file(d / "model.safetensors") for d in (tmp_path / "one", tmp_path / "two", tiny_model))
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    apart = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved > 1e-3 and apart < moved / 20, (moved, apart)  # both trained, to nearly the same weights
    saved = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert "model.safetensors" in saved and "config.json" in saved  # rank 0 saved it, whole
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no spec folder or temp checkpoint left


@pytest.mark.slow
def test_a_killed_training_process_fails_the_task_with_its_output_and_a_retry_trains(
    tiny_model: Path, tmp_path: Path, monkeypatch
):
    examples = _examples(16)
    cfg = TrainConfig(lr=1e-3, epochs=1, batch_size=4, processes=2)
    args = (str(tiny_model), examples, cfg, tmp_path / "ckpt")
    monkeypatch.setenv("PIDISTILL_FAULT_KILL_AT", "train#1")  # each child SIGKILLs itself after its first step
    with pytest.raises(TrainingProcessFailed, match=r"(?s)exited with status 1.*last output:.*SIGKILL"):
        train_sft_processes(*args, seed=0, device="cpu", dtype="auto", processes=2, log=log)
    assert not (tmp_path / "ckpt").exists()
    monkeypatch.delenv("PIDISTILL_FAULT_KILL_AT")
    result = train_sft_processes(*args, seed=0, device="cpu", dtype="auto", processes=2, log=log)
    assert result.steps == 2 and (tmp_path / "ckpt" / "model.safetensors").exists()


def test_multi_process_training_is_sft_only_for_now():
    with pytest.raises(PreflightError, match=r"train.processes=2: multi-process training is SFT only"):
        preflight(load_config("demo", ["train.method=opsd", "train.processes=2"]))


@pytest.mark.slow
def test_a_round_trains_in_two_processes(tiny_model: Path, pidistill_home: Path):
    """The train task launches the processes and records what they trained, like a one-process round."""
    from flows.experiment import experiment_flow
    from storage.catalog import query

    sets = ["seeds=[0]", "rounds=1", "domain.train_size=8", "domain.eval_size=8", "sampling.n=2"]
    sets += ["arms=[{name: rft}]", "train.batch_size=2", "train.processes=2"]
    cfg = load_config("demo", sets)
    experiment_flow(cfg, run_id="ddp")
    (row,) = query("select n_examples, steps, final_loss, checkpoint from trainings where run_id = 'ddp'").itertuples()
    per_epoch = -(-row.n_examples // 4)  # a global batch of 2 processes x 2
    assert row.n_examples > 0 and row.steps == per_epoch * cfg.train.epochs and row.final_loss is not None
    assert (Path(row.checkpoint) / "model.safetensors").exists()


@pytest.mark.slow
def test_the_training_processes_die_with_the_task_process(tiny_model: Path, tmp_path: Path):
    """A train task's process killed with SIGKILL (no cleanup runs) leaves no training process behind."""
    import os
    import signal
    import subprocess
    import sys

    code = (
        "import logging, sys; from pathlib import Path; sys.path.insert(0, '.')\n"
        "from experiments.config import TrainConfig\n"
        "from models.training.distributed import train_sft_processes\n"
        "from tests.test_distributed_training import _examples\n"
        f"train_sft_processes({str(tiny_model)!r}, _examples(64), TrainConfig(epochs=50, batch_size=2, processes=2),"
        f" Path({str(tmp_path / 'ckpt')!r}), seed=0, device='cpu', dtype='auto', processes=2,"
        " log=logging.getLogger('x'))\n"
    )
    task = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent)

    def trainers() -> list[int]:  # the launcher and its ranks: processes whose command line names the spec
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(tmp_path).encode() in cmdline and int(pid) != task.pid:
                found.append(int(pid))
        return found

    deadline = time.monotonic() + 120
    while len(trainers()) < 3 and time.monotonic() < deadline:  # the launcher and 2 ranks
        time.sleep(0.5)
    assert len(trainers()) >= 3, "the training processes did not start"
    task.send_signal(signal.SIGKILL)
    task.wait()
    deadline = time.monotonic() + 60
    while trainers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert trainers() == []
