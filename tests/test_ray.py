"""Scale-out: how stages are sharded, the `scale` config, and shards on a local Ray head giving the same
attempts as the same shards run in this process.

The Ray test is real: `ray start --head` (the venv's ray, 2 CPUs) as a subprocess, Prefect's
RayTaskRunner connecting to it, Ray workers loading the tiny model themselves and reporting their
task runs to this session's Prefect server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from domains import Problem
from experiments.config import ConfigError, load_config
from storage.catalog import query
from tasks.keys import RoundKey
from tasks.metering import metered
from tasks.resume import checkpoint_path
from tasks.sample import SampleRequest
from tasks.shards import split_requests


def _requests(counts: list[int]) -> list[SampleRequest]:
    """counts[i] requests for problem i, adjacent (as the stages make them)."""
    return [
        SampleRequest(Problem(f"p{i}", "arith", f"q{i}"), f"prompt {i}.{j}", attempt_idx=1, parent_id=f"parent-{i}-{j}")
        for i, n in enumerate(counts)
        for j in range(n)
    ]


def _ids(part: list[SampleRequest]) -> list[str]:
    return [r.problem.problem_id for r in part]


def test_split_requests_keeps_order_and_whole_problems():
    first_tries = _requests([1] * 10)
    parts = split_requests(first_tries, 3)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert [r for p in parts for r in p] == first_tries
    assert split_requests(first_tries, 1) == [first_tries]

    follow_ups = _requests([3, 1, 1, 4, 2, 1, 5, 1])  # retries: one request per failed sample
    for shards in (2, 3, 4, 8):
        parts = split_requests(follow_ups, shards)
        assert parts == split_requests(follow_ups, shards)  # deterministic
        assert [r for p in parts for r in p] == follow_ups  # every request, in order
        assert 1 <= len(parts) <= shards and all(parts)
        owners = [{pid for pid in _ids(p)} for p in parts]
        assert sum(len(o) for o in owners) == 8  # no problem in two shards
    assert [len(p) for p in split_requests(follow_ups, 2)] == [9, 9]  # cut by requests, not problems

    assert _ids(r for p in split_requests(_requests([1, 1]), 5) for r in p) == ["p0", "p1"]  # fewer problems
    assert len(split_requests(_requests([1, 1]), 5)) == 2
    scattered = [*_requests([1, 1]), *_requests([1])]  # p0 twice, not adjacent: kept together
    assert [_ids(p) for p in split_requests(scattered, 2)] == [["p0", "p0"], ["p1"]]
    assert split_requests([], 3) == []
    with pytest.raises(ValueError):
        split_requests(first_tries, 0)


def test_scale_config_defaults_hash_and_errors():
    base = load_config("demo")
    assert base.scale.executor == "local" and base.scale.shards == 1
    assert '"scale"' not in base.canonical_json()  # the default leaves every config hash as it was
    on_ray = load_config("demo", ["scale.executor=ray", "scale.ray_address=10.0.0.5:6379", "scale.gpus_per_shard=1"])
    assert on_ray.config_hash() == base.config_hash()  # where shards run is not what they compute
    assert load_config("demo", ["scale.ray_address=ray://head:10001"]).scale.ray_address == "ray://head:10001"
    two = load_config("demo", ["scale.shards=2"])
    assert two.config_hash() != base.config_hash()  # shards draw other random numbers
    assert load_config("demo", ["scale.shards=2", "scale.executor=ray"]).config_hash() == two.config_hash()
    assert two.for_arm("retry").scale.shards == 2

    for overrides, field in [
        (["scale.shards=0"], "scale.shards"),
        (["scale.threads_per_shard=0"], "scale.threads_per_shard"),
        (["scale.executor=dask"], "scale.executor"),
        (["scale.ray_address=http://head:8265"], "scale.ray_address"),
        (["scale.forward_env=['NOT A NAME']"], "scale.forward_env"),
        (["scale.gpus_per_shard=1"], "scale: gpus_per_shard"),
        (["scale.shard=2"], "scale.shard"),
    ]:
        with pytest.raises(ConfigError, match=f"^{field}"):
            load_config("demo", overrides)


def test_each_shard_writes_its_own_stage_row(pidistill_home):
    key = RoundKey("r", "a", 0, 1, str(pidistill_home))
    for shard in (None, 0, 1):
        with metered(key, "sample", 1, "m", shard=shard) as m:
            m["n_items"] = 5
    rows = [r for f in (pidistill_home / "r" / "stages").rglob("*.parquet") for r in pq.read_table(f).to_pylist()]
    # Unsharded and shard 0 share the path (a run is either sharded or not: shards are in the config hash).
    assert sorted(p.name for p in (pidistill_home / "r").rglob("*.parquet")) == [
        "sample-1-0.parquet",
        "sample-1-1.parquet",
    ]
    assert sorted(r["shard"] for r in rows) == [0, 1]
    assert {r["worker"] for r in rows} == {f"{socket.gethostname()}:{os.getpid()}"}


def test_worker_env_carries_home_cache_and_api(pidistill_home, monkeypatch):
    from flows.scale import worker_env

    monkeypatch.setenv("SOME_TOKEN", "x")
    env = worker_env(["SOME_TOKEN", "NOT_SET_ANYWHERE"], "http://10.0.0.5:4200/api")
    assert env["PIDISTILL_HOME"] == str(pidistill_home) and Path(env["PIDISTILL_HOME"]).is_absolute()
    assert env["PIDISTILL_MODEL_CACHE"] == os.environ["PIDISTILL_MODEL_CACHE"]
    assert env["HF_HUB_OFFLINE"] == "1" and env["SOME_TOKEN"] == "x" and "NOT_SET_ANYWHERE" not in env
    assert env["PREFECT_API_URL"] == "http://10.0.0.5:4200/api"


# ----------------------------------------------------------------------------- on a local Ray head


class RayHead:
    """`ray start --head --block` (the venv's ray, 2 CPUs) as a subprocess. Starting takes 10-15 s,
    so it starts at once and `address` waits for it: the local run goes on meanwhile. `stop()`
    sends SIGTERM to the blocking `ray start`, which stops every process it started."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.log_path = Path(self.temp) / "head.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        # Ray resolves a loopback --node-ip-address to the machine's address; it still answers on 127.0.0.1.
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("ray")),
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={self.port}",
                "--num-cpus=2",
                "--include-dashboard=false",
                "--disable-usage-stats",
                "--object-store-memory=200000000",
                f"--temp-dir={self.temp}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )

    @property
    def address(self) -> str:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in self.log_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray head did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        return f"127.0.0.1:{self.port}"

    def stop(self) -> list[int]:
        """Stop the head; returns the pids of its processes that were still running (killed then)."""
        import psutil

        self.proc.terminate()
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        left = [p for p in psutil.process_iter(["cmdline"]) if self.temp in " ".join(p.info["cmdline"] or [])]
        for p in left:  # only processes of this head (its temp dir is in their command lines)
            p.kill()
        shutil.rmtree(self.temp, ignore_errors=True)
        return [p.pid for p in left]


@pytest.fixture(scope="module")
def ray_head() -> RayHead:
    head = RayHead()
    try:
        yield head
    finally:
        left = head.stop()
        assert not left, f"the ray head left processes behind: {left}"


CFG = [
    "seeds=[0]",
    "rounds=1",
    "domain.train_size=8",
    "domain.eval_size=8",
    "sampling.n=2",
    "train.method=none",
    "retry.max_retries=1",
    "retry.feedback=previous_attempt",
    "arms=[{name: retry}]",
    "scale.shards=2",
]
COMPARED = (
    "seed, round, phase, problem_id, attempt_idx, sample_idx, parent_id is null as first, prompt, completion, "
    "n_completion_tokens, status, passed, score, feedback, accepted, reject_reason"
)


@pytest.mark.slow
def test_shards_on_ray_give_the_same_attempts_as_local_shards(tiny_model, ray_head, pidistill_home, monkeypatch):
    from flows.experiment import experiment_flow

    # The run is resumed below after its later checkpoints are deleted (an interrupted run, made from a
    # finished one): it must keep its shards, which a completed run is otherwise compacted out of.
    monkeypatch.setenv("PIDISTILL_COMPACT", "0")
    local = load_config("demo", CFG)
    experiment_flow(local, run_id="local")  # while the Ray head starts
    on_ray = load_config("demo", [*CFG, "scale.executor=ray", f"scale.ray_address={ray_head.address}"])
    experiment_flow(on_ray, run_id="ray")

    def rows(run_id: str, table: str = "attempts", cols: str = COMPARED, where: str = "true") -> list:
        return query(f"select {cols} from {table} where run_id = '{run_id}' and {where} order by all").values.tolist()

    # The same completions, verdicts and decisions (attempt ids differ: they include the run id).
    attempts = rows("ray")
    assert attempts == rows("local")
    assert {a[4] for a in attempts} == {0, 1} and len(attempts) > 16  # first tries and retries
    assert query("select count(distinct config_hash) n from runs").n[0] == 1

    # Every sample/verify shard of the Ray run ran in a Ray worker, not in this process; the local ones here.
    stage_cols = "stage, attempt_idx, shard, worker"
    ray_stages = rows("ray", "stages", stage_cols, "stage in ('sample', 'verify')")
    local_stages = rows("local", "stages", stage_cols, "stage in ('sample', 'verify')")
    assert (
        [s[:3] for s in ray_stages]
        == [s[:3] for s in local_stages]
        == [[stage, level, shard] for stage in ("sample", "verify") for level in (0, 1) for shard in (0, 1)]
    )
    here = f"{socket.gethostname()}:{os.getpid()}"
    assert all(s[3] == here for s in local_stages)
    assert all(s[3].startswith("ray:") and not s[3].endswith(f":{os.getpid()}") for s in ray_stages), ray_stages
    # Stage rows per shard add up: the compute view counts every sample once.
    compute = query("select run_id, samples from compute order by run_id").values.tolist()
    n_train = rows("ray", "attempts", "count(*)", "phase = 'train'")[0][0]
    assert compute == [["local", n_train], ["ray", n_train]]

    # Resume on the other executor (the same config hash): finished shards are skipped, not rerun.
    key = RoundKey("ray", "retry", 0, 1, str(pidistill_home))
    shard_rows = sorted((pidistill_home / "ray" / "stages").rglob("sample-*.parquet"))
    written = {p: p.stat().st_mtime_ns for p in shard_rows}
    for name in ("round", "verify-0", "verify-1", "filter", "train", "evaluate"):
        checkpoint_path(key, name).unlink()
    assert checkpoint_path(key, "sample-1-s1").exists() and checkpoint_path(key, "verify-1-s1").exists()
    experiment_flow(local, run_id="ray")
    assert {p: p.stat().st_mtime_ns for p in shard_rows} == written
    assert rows("ray") == rows("local")


@pytest.mark.slow
def test_chains_on_ray_give_the_attempts_of_serial_chains(tiny_model, ray_head, pidistill_home):
    """scale.chains with scale.executor=ray: each arm x seed chain is one Ray task (its shards inside it)."""
    from flows.experiment import experiment_flow

    cfg = [c for c in CFG if c != "seeds=[0]"] + ["seeds=[0, 1]", "scale.torch_threads=1"]
    experiment_flow(load_config("demo", cfg), run_id="serial")
    on_ray = [*cfg, "scale.chains=2", "scale.executor=ray", f"scale.ray_address={ray_head.address}"]
    experiment_flow(load_config("demo", on_ray), run_id="chains")

    def rows(run_id: str, table: str = "attempts", cols: str = f"arm, {COMPARED}", where: str = "true") -> list:
        return query(f"select {cols} from {table} where run_id = '{run_id}' and {where} order by all").values.tolist()

    assert rows("chains") == rows("serial") and len(rows("chains")) > 32
    # round 0 (the base model's evaluation) in this process; each seed's round 1 in a Ray worker, whole
    workers = rows("chains", "stages", "seed, round, stage, worker")
    here = f"{socket.gethostname()}:{os.getpid()}"
    assert {w[3] for w in workers if w[1] == 0} == {here}
    chain_workers = {(w[0], w[3]) for w in workers if w[1] == 1}
    assert all(w.startswith("ray:") for _, w in chain_workers) and len(chain_workers) == 2, chain_workers
    assert query("select status from runs where run_id = 'chains'").status.tolist() == ["completed"]
