"""Concurrent chains (`scale.chains`): the arm x seed chains of rounds, up to N at once, each in its own process.

    pidistill run full-ft-vs-lora --set scale.chains=4 --set scale.gpus_per_chain=2     # 8 GPUs, 4 chains

After round 0, each (arm, seed) chain depends on nothing but its own rounds, so the experiment runs
them as `chain` task runs on a Prefect `ProcessPoolTaskRunner` of `scale.chains` worker processes;
a chain's rounds stay its own subflow runs, and its stages, checkpoints and resume are those of a
serial chain. Processes, not threads: torch's random generator and the sampler are one per process
(see flows/scale.py), and a CUDA device set (`CUDA_VISIBLE_DEVICES`) is fixed when a process first
touches CUDA.

Devices: a worker claims the first free slot i in 0..N-1 when it starts (an `flock` held for its
life, under `<run>/.chains/`) and sees only devices [i*g, (i+1)*g) of the ones this process sees,
g = `scale.gpus_per_chain`; with g = 0 (CPU) nothing is pinned. A worker runs one chain at a time,
so no two chains ever share a device.

Same results as serial: a chain's seeds come from (seed, round, stage), never from the process or
the order chains run in, so with the same torch thread count (`scale.torch_threads`, which also
keeps N chains from oversubscribing the CPU) the attempts are identical (tests/test_chains.py).
A chain that fails fails the run once the others have finished; resume reruns only what did not
complete (each round is checkpointed).

On Ray (`scale.executor=ray`), each chain is one Ray task (prefect-ray) holding `gpus_per_chain` GPUs
and `torch_threads` CPUs (Ray picks the node and sets CUDA_VISIBLE_DEVICES), at most `scale.chains`
at once; its rounds' shards run inside it, one after another. PIDISTILL_HOME must be the same shared
folder on every node, as for shards.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from experiments.config import ExperimentConfig
from models.devices import device_sets, visible_devices

_SLOT_FD: int | None = None  # the worker's claimed slot: held open (and locked) for the worker's life


def _start_worker(api_url: str | None, slots: Path, sets: list[str] | None) -> None:
    """Each worker process, before its first chain: report to this run's Prefect API (not a temporary
    server of its own), and claim a slot, whose devices it alone then sees."""
    global _SLOT_FD
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
    slots.mkdir(parents=True, exist_ok=True)
    n = len(sets) if sets else None
    i = 0
    while True:
        fd = os.open(slots / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            i += 1
            if n is not None and i >= n:
                raise RuntimeError(f"no free chain slot under {slots}: more workers than scale.chains") from None
            continue
        _SLOT_FD = fd
        break
    os.environ["PIDISTILL_CHAIN_SLOT"] = str(i)
    if sets:
        os.environ["CUDA_VISIBLE_DEVICES"] = sets[i]


@task(name="chain", cache_policy=NO_CACHE, task_run_name="chain {arm} seed={seed}")
def chain(cfg: ExperimentConfig, run_id: str, arm: str, seed: int) -> None:
    """One arm x seed chain of rounds, in a worker process (its rounds are subflow runs of this task run)."""
    from flows.experiment import run_chain

    slot = os.environ.get("PIDISTILL_CHAIN_SLOT")
    where = f"slot {slot}" if slot else "a Ray worker"
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        where += f", CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}"
    get_run_logger().info(f"chain {arm} seed={seed} in process {os.getpid()} ({where})")
    run_chain(cfg, run_id, arm, seed)


def run_chains(config: ExperimentConfig, run_id: str, work: list[tuple[str, int]]) -> None:
    """Run the (arm, seed) chains in `work`, up to `scale.chains` at once (worker processes here, or Ray tasks
    with `scale.executor=ray`); raises the first failure once every chain has finished."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if config.scale.executor == "ray":
        from prefect_ray.context import remote_options

        from flows.scale import ray_runner

        runner, api_url = ray_runner(config)
        # A chain holds its GPUs for all its rounds and samples, verifies and trains in its own process: its
        # rounds' shards run there (executor=local; the same shards, so the same numbers), not as nested Ray
        # tasks that would wait for GPUs the chains already hold.
        inner = config.model_copy(update={"scale": config.scale.model_copy(update={"executor": "local"})})
        placement = remote_options(num_cpus=config.scale.torch_threads or 1, num_gpus=config.scale.gpus_per_chain)
        with runner, placement, temporary_settings(updates={PREFECT_API_URL: api_url}):
            futures = _at_most(config.scale.chains, runner, inner, run_id, work)
    else:
        with _process_pool(config, run_id, len(work)) as runner:
            futures = _at_most(config.scale.chains, runner, config, run_id, work)
    failed = [(w, f) for w, f in zip(work, futures, strict=True) if not f.state.is_completed()]
    if failed:
        names = ", ".join(f"{arm} seed={seed}" for (arm, seed), _ in failed)
        get_run_logger().error(f"{len(failed)} of {len(work)} chains failed: {names}")
        failed[0][1].result()  # raises that chain's exception


def _process_pool(config: ExperimentConfig, run_id: str, n_work: int):
    """Worker processes on this machine, each pinned to its slot's devices (`_start_worker`)."""
    from prefect.client.orchestration import get_client
    from prefect.task_runners import ProcessPoolTaskRunner

    from storage.home import home_dir

    g = config.scale.gpus_per_chain
    sets = device_sets(config.scale.chains, g, visible_devices() if g else [])
    with get_client(sync_client=True) as client:
        api_url = client.api_url
    return ProcessPoolTaskRunner(
        max_workers=min(config.scale.chains, n_work),
        initializer=_start_worker,
        initargs=(str(api_url).rstrip("/") if api_url else None, home_dir() / run_id / ".chains", sets),
    )


def _at_most(n: int, runner, config: ExperimentConfig, run_id: str, work: list[tuple[str, int]]) -> list:
    """Submit the chains in order, never more than `n` unfinished at once (a process pool has `n` workers
    anyway; a Ray cluster would start every chain it has room for); every chain's future, once all finished."""
    from prefect.futures import as_completed

    futures: list = []
    running: list = []
    for arm, seed in work:
        while len(running) >= n:
            running.remove(next(as_completed(running)))
        params = {"cfg": config.for_arm(arm), "run_id": run_id, "arm": arm, "seed": seed}
        futures.append(runner.submit(chain, params))
        running.append(futures[-1])
    for f in futures:
        f.wait()
    return futures
