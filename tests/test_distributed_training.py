"""Multi-process training (`train.processes`, models/training/distributed.py): SFT in 2 torchrun processes on
the gloo backend, against one process with twice the batch; a killed child fails cleanly and trains again."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import torch

from domains import get_domain
from experiments.config import TrainConfig, load_config
from models.training.distributed import TrainingProcessFailed, launch
from models.training.sft import train_sft
from tasks.runs import PreflightError, preflight

log = logging.getLogger("test")


def _sft_in_processes(model: Path, examples: list[dict], cfg: TrainConfig, checkpoint: Path, processes: int = 2):
    payload = {"model_ref": str(model), "examples": examples, "cfg": cfg, "checkpoint": checkpoint}
    return launch("sft", {**payload, "seed": 0, "device": "cpu", "dtype": "auto"}, processes, checkpoint.parent, log)


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
    two = _sft_in_processes(
        tiny_model, examples, TrainConfig(lr=1e-3, epochs=2, batch_size=4, processes=2), tmp_path / "two"
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


def _sft_on(model: Path, examples: list[dict], cfg: TrainConfig, checkpoint: Path, device: str):
    payload = {"model_ref": str(model), "examples": examples, "cfg": cfg, "checkpoint": checkpoint}
    return launch(
        "sft", {**payload, "seed": 0, "device": device, "dtype": "float32"}, cfg.processes, checkpoint.parent, log
    )


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="FSDP shards over GPUs (Accelerate runs FSDP on accelerators only): needs 2 CUDA GPUs (make gpu-check)",
)
@pytest.mark.parametrize("strategy", ["fsdp", "fsdp_grad_op"])
def test_sharded_training_trains_like_one_process_and_saves_whole_weights(
    tiny_model: Path, tmp_path: Path, strategy: str
):
    """train.strategy=fsdp (FSDP2 full shard, ZeRO-3) / fsdp_grad_op (ZeRO-2) over 2 GPUs: the loss curve of one
    process at twice the batch, and rank 0 gathers the shards into one ordinary checkpoint (every tensor whole)."""
    from safetensors.torch import load_file

    examples = _examples()
    one = _sft_on(tiny_model, examples, TrainConfig(lr=1e-3, epochs=2, batch_size=8), tmp_path / "one", "cuda")
    t = time.perf_counter()
    cfg = TrainConfig(lr=1e-3, epochs=2, batch_size=4, processes=2, strategy=strategy)
    sharded = _sft_on(tiny_model, examples, cfg, tmp_path / "sharded", "cuda")
    print(f"{strategy}, 2 processes x batch 4: {time.perf_counter() - t:.1f} s")
    assert sharded.steps == one.steps == 8
    assert sharded.losses == pytest.approx(one.losses, rel=0.02)
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "sharded" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape and b[k].dtype == a[k].dtype for k in a)
    start = load_file(tiny_model / "model.safetensors")
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    apart = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved > 1e-3 and apart < moved / 20, (moved, apart)


def test_the_sharding_strategies_reach_the_trainer():
    """What `train.strategy` hands TRL/Accelerate in a rank of 2 (the sharded run itself needs 2 GPUs, above)."""
    from models.training.sft import sft_config

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORLD_SIZE", "2")
        full = sft_config(
            TrainConfig(processes=2, strategy="fsdp"), Path("/tmp/x"), 0, "cuda", "float32"
        ).fsdp_plugin_args
        grad_op = sft_config(TrainConfig(processes=2, strategy="fsdp_grad_op"), Path("/tmp/x"), 0, "cuda", "float32")
        ddp = sft_config(TrainConfig(processes=2), Path("/tmp/x"), 0, "cuda", "float32")
    assert full["fsdp_version"] == 2 and full["reshard_after_forward"] is True
    assert full["state_dict_type"] == "FULL_STATE_DICT" and full["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert grad_op.fsdp_plugin_args["reshard_after_forward"] is False
    assert ddp.fsdp_plugin_args is None


@pytest.mark.slow
def test_opsd_in_two_processes_matches_one_process(tiny_model: Path, tmp_path: Path):
    """OPSD over 2 processes (DDP, gloo): with greedy rollouts both draw the same completions, rank 0 gets every
    rollout in batch order, and the loss curve follows one process's over the same batches."""
    from tasks.train import _opsd_rank

    cfg = load_config(
        "demo",
        [
            "train.method=opsd",
            "train.lr=1e-4",
            "train.opsd.steps=3",
            "train.opsd.batch_size=4",
            "train.opsd.rollout_temperature=0",
            "train.opsd.max_new_tokens=16",
            "train.processes=2",
        ],
    )
    problems = get_domain("arith").load("train", limit=8)
    payload = {"cfg": cfg, "model_ref": str(tiny_model), "problems": problems, "seed": 0}
    one, one_rollouts = _opsd_rank(**payload, checkpoint=tmp_path / "one")
    t = time.perf_counter()
    two, two_rollouts = launch("opsd", {**payload, "checkpoint": tmp_path / "two"}, 2, tmp_path, log)
    print(f"OPSD, 2 processes: {time.perf_counter() - t:.1f} s")

    assert two.steps == one.steps == 3 and two.n_examples == one.n_examples == 12
    assert [(s, [r.problem.problem_id for r in rs]) for s, _, rs in two_rollouts] == [
        (s, [r.problem.problem_id for r in rs]) for s, _, rs in one_rollouts
    ]
    assert [r.completion for _, _, rs in two_rollouts for r in rs] == [
        r.completion for _, _, rs in one_rollouts for r in rs
    ]
    # not exact: each process averages over its own completion tokens, one process over all of them
    assert two.losses == pytest.approx(one.losses, rel=0.1)
    assert (tmp_path / "two" / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.slow
def test_a_killed_training_process_fails_the_task_with_its_output_and_a_retry_trains(
    tiny_model: Path, tmp_path: Path, monkeypatch
):
    examples = _examples(16)
    cfg = TrainConfig(lr=1e-3, epochs=1, batch_size=4, processes=2)
    monkeypatch.setenv("PIDISTILL_FAULT_KILL_AT", "train#1")  # each child SIGKILLs itself after its first step
    with pytest.raises(TrainingProcessFailed, match=r"(?s)exited with status 1.*last output:.*SIGKILL"):
        _sft_in_processes(tiny_model, examples, cfg, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
    monkeypatch.delenv("PIDISTILL_FAULT_KILL_AT")
    result = _sft_in_processes(tiny_model, examples, cfg, tmp_path / "ckpt")
    assert result.steps == 2 and (tmp_path / "ckpt" / "model.safetensors").exists()


def test_preflight_refuses_what_the_training_strategies_cannot_train():
    with pytest.raises(PreflightError, match=r"train.strategy=fsdp: OPSD trains data-parallel \(ddp\) only"):
        preflight(load_config("demo", ["train.method=opsd", "train.processes=2", "train.strategy=fsdp"]))
    with pytest.raises(PreflightError, match=r"train.opsd.batch_size=2: every process rolls out its share"):
        preflight(load_config("demo", ["train.method=opsd", "train.processes=4", "train.opsd.batch_size=2"]))
    with pytest.raises(PreflightError, match=r"train.strategy=fsdp_grad_op with train.peft=lora: sharding is for"):
        preflight(load_config("demo", ["train.peft=lora", "train.processes=2", "train.strategy=fsdp_grad_op"]))
    if not torch.cuda.is_available():
        with pytest.raises(PreflightError, match=r"train.strategy=fsdp needs GPUs: Accelerate shards on accelerators"):
            preflight(load_config("demo", ["train.processes=2", "train.strategy=fsdp"]))
    preflight(load_config("demo", ["train.method=opsd", "train.processes=2", "train.opsd.batch_size=2"]))


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
        "from tests.test_distributed_training import _examples, _sft_in_processes\n"
        f"_sft_in_processes(Path({str(tiny_model)!r}), _examples(64), TrainConfig(epochs=50, batch_size=2, processes=2),"
        f" Path({str(tmp_path / 'ckpt')!r}))\n"
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
