"""Scale-out (`scale` in the config): the sample and verify stages as shards, here or on a Ray cluster.

    pidistill run demo --set scale.executor=ray --set scale.shards=8 --set scale.ray_address=10.0.0.5:6379

A stage's requests are cut into `scale.shards` contiguous shards of whole problems
(`tasks.shards.split_requests`). Each shard is its own Prefect task run (`sample` and `verify`
with `shard=s`) with its own checkpoint (`sample-<level>-s<s>`, `verify-<level>-s<s>`: a resumed
run skips finished shards) and its own `stages` rows; the results are concatenated in shard
order. A shard's seed comes from (seed, round, level, shard) and it pins torch to
`scale.threads_per_shard` threads, so it draws the same completions wherever it runs.

executor=local runs the shards one after another in this process. Not in threads: torch's
random generator is one per process (`torch.manual_seed` in one thread reseeds every other
thread's sampling, so concurrent shards would not be reproducible), the sampler is one per
process, and generate() already uses every core. executor=ray submits the shards to the round
flow's `RayTaskRunner` (prefect-ray; `scaled`): every Ray worker loads its own sampler and
domain (processes and models are never shipped), and reads and writes PIDISTILL_HOME, which
must be the same shared POSIX folder on every node.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefect import Flow
from prefect.futures import PrefectFuture
from prefect.utilities.annotations import quote

from domains import Problem
from experiments.config import ExperimentConfig
from storage.home import home_dir
from storage.schema import Attempt
from tasks.keys import RoundKey
from tasks.resume import checkpoint_path, resumable
from tasks.sample import SampleRequest, sample
from tasks.shards import split_requests
from tasks.verify import check_error_rate, verify

# Copied to every Ray worker when set here (besides PIDISTILL_HOME, always, and scale.forward_env).
WORKER_ENV = (
    "PIDISTILL_MODEL_CACHE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "PREFECT_API_URL",
    "ATEN_CPU_CAPABILITY",  # the pinned CPU numerics (models/numerics.py): the same floats on every worker
    "MKL_CBWR",
)


def sharded(cfg: ExperimentConfig) -> bool:
    """Whether sample/verify run as shards (more than one, or on Ray) instead of one task run each."""
    return cfg.scale.shards > 1 or cfg.scale.executor == "ray"


def sample_and_verify(
    cfg: ExperimentConfig,
    key: RoundKey,
    problems: dict[str, Problem],
    level: int,
    model_ref: str,
    requests: list[SampleRequest],
) -> list[Attempt]:
    """Sample and verify one retry level's `requests` (once per run: checkpoint `verify-<level>`);
    verified attempts in request order."""
    return resumable(key, f"verify-{level}", _sample_and_verify, cfg, key, problems, level, model_ref, requests)


def _sample_and_verify(
    cfg: ExperimentConfig,
    key: RoundKey,
    problems: dict[str, Problem],
    level: int,
    model_ref: str,
    requests: list[SampleRequest],
) -> list[Attempt]:
    if not sharded(cfg):  # one task run per stage
        rows = resumable(key, f"sample-{level}", sample, cfg, key, model_ref, quote(requests))
        return verify(cfg, key, quote(problems), quote(rows))  # type: ignore[call-overload]  # Prefect unwraps quote()
    return _sharded(cfg, key, problems, level, model_ref, requests)


def _sharded(
    cfg: ExperimentConfig,
    key: RoundKey,
    problems: dict[str, Problem],
    level: int,
    model_ref: str,
    requests: list[SampleRequest],
) -> list[Attempt]:
    """Shard by shard, each its own task run and checkpoint, here or on Ray; verified rows in shard order."""
    shards = [
        _Shard(s, part, {r.problem.problem_id: problems[r.problem.problem_id] for r in part}, level)
        for s, part in enumerate(split_requests(requests, cfg.scale.shards))
    ]
    if cfg.scale.executor == "local":
        out = [a for sh in shards for a in resumable(key, sh.verify_name, _local_shard, cfg, key, model_ref, sh)]
    else:
        out = _ray_shards(cfg, key, model_ref, shards)
    check_error_rate(cfg, out)  # over the whole stage, as unsharded (shards do not check their own)
    return out


@dataclass(frozen=True)
class _Shard:
    index: int
    requests: list[SampleRequest]
    problems: dict[str, Problem]
    level: int

    @property
    def sample_name(self) -> str:  # its checkpoint and task run name
        return f"sample-{self.level}-s{self.index}"

    @property
    def verify_name(self) -> str:
        return f"verify-{self.level}-s{self.index}"


def _local_shard(cfg: ExperimentConfig, key: RoundKey, model_ref: str, shard: _Shard) -> list[Attempt]:
    """One shard in this process: its sample (own checkpoint), then its verify."""
    sample_task = sample.with_options(task_run_name=shard.sample_name)
    rows = resumable(key, shard.sample_name, sample_task, cfg, key, model_ref, quote(shard.requests), shard=shard.index)
    verify_task = verify.with_options(task_run_name=shard.verify_name)
    return verify_task(cfg, key, quote(shard.problems), quote(rows), shard=shard.index)  # type: ignore[call-overload]


def _ray_shards(cfg: ExperimentConfig, key: RoundKey, model_ref: str, shards: list[_Shard]) -> list[Attempt]:
    """Every unfinished shard submitted to the round's RayTaskRunner at once; gathered in shard order."""
    from prefect_ray.context import remote_options

    futures: dict[int, tuple[Any, PrefectFuture]] = {}
    with remote_options(num_cpus=cfg.scale.threads_per_shard, num_gpus=cfg.scale.gpus_per_shard):
        for sh in shards:
            if checkpoint_path(key, sh.verify_name).exists():
                continue  # a resumed run: this shard is done
            rows = (
                resumable(key, sh.sample_name, _not_reached)
                if checkpoint_path(key, sh.sample_name).exists()
                else sample.with_options(task_run_name=sh.sample_name).submit(
                    cfg, key, model_ref, sh.requests, shard=sh.index
                )
            )
            # A future as an argument: Ray hands the rows from worker to worker, verify waits for them.
            # (No quote() here: prefect-ray passes a quoted argument to the task still wrapped.)
            verify_task = verify.with_options(task_run_name=sh.verify_name)
            futures[sh.index] = (rows, verify_task.submit(cfg, key, sh.problems, rows, shard=sh.index))  # type: ignore[arg-type]  # a future: Prefect waits for it
    out: list[Attempt] = []
    for sh in shards:  # checkpoint each shard as it is gathered
        rows, verified = futures.get(sh.index, (None, None))
        if isinstance(rows, PrefectFuture):
            resumable(key, sh.sample_name, rows.result)
        out += resumable(key, sh.verify_name, verified.result if verified is not None else _not_reached)
    return out


def _not_reached() -> Any:
    raise AssertionError("a checkpoint that existed a moment ago is gone")


# ----------------------------------------------------------------------------- Ray


def worker_env(forward: Sequence[str] = (), api_url: str | None = None) -> dict[str, str]:
    """The environment a Ray worker needs to run a shard as this process would."""
    env = {n: os.environ[n] for n in (*WORKER_ENV, *forward) if n in os.environ}
    env["PIDISTILL_HOME"] = str(home_dir())  # absolute: a worker's cwd is Ray's, not ours
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def prefect_api_url() -> str:
    """The Prefect API this process reports to: PREFECT_API_URL, or the temporary server that
    Prefect's ephemeral mode started on loopback (reachable from this machine's workers only)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return PREFECT_API_URL.value()
    context = FlowRunContext.get()
    client = context.client if context and context.client else get_client(sync_client=True)
    return str(client.api_url).rstrip("/")


def ray_runner(cfg: ExperimentConfig):
    """A RayTaskRunner on `scale.ray_address` whose workers get `worker_env`, and the Prefect API they report to
    (task runs submitted to it must run under that PREFECT_API_URL)."""
    from prefect_ray import RayTaskRunner

    api_url = prefect_api_url()
    runner = RayTaskRunner(
        address=cfg.scale.ray_address,
        init_kwargs={"runtime_env": {"env_vars": worker_env(cfg.scale.forward_env, api_url)}},
    )
    return runner, api_url


def scaled(flow: Flow, cfg: ExperimentConfig) -> Callable[..., Any]:
    """`flow` (the round) as `cfg.scale` says: as it is, or with a RayTaskRunner for its shards.

    Ray workers get PIDISTILL_HOME, the model cache, the HF settings and the Prefect API of
    this process (`worker_env`), so shard task runs report to the same server as the round."""
    if cfg.scale.executor != "ray":
        return flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    runner, api_url = ray_runner(cfg)
    on_ray = flow.with_options(task_runner=runner)

    def run(*args: Any, **kwargs: Any) -> Any:
        # Task runs carry this process's settings to the workers: name the API explicitly, or a
        # worker in ephemeral mode would start a Prefect server of its own.
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            return on_ray(*args, **kwargs)

    return run
