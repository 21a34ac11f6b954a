"""Run bookkeeping: checks before anything is written, the `runs` row, the model a run starts from,
and the lock that lets one process at a time write (or resume) a run.

    >>> preflight(cfg)               # raises PreflightError naming the field, writes nothing
    >>> rid = new_run_id("demo")     # 'demo-20261126-104512-3f2a'
    >>> check_resumable(cfg, rid)    # None for a new run id, else the existing run's row
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from domains import Domain, DomainError, Problem
from domains.arith import ArithDomain
from domains.base import stable_hash
from domains.data import looks_like_path
from domains.decontam import Contaminated, check_decontaminated
from domains.errors import NotRetryable
from experiments.config import ConfigError, ExperimentConfig, ModelConfig, TrainConfig
from storage.compact import CompactionError, TableCompaction, compact_run, compacted
from storage.home import home_dir
from storage.schema import TABLES
from storage.writer import sweep_temp_files, write_rows
from tasks.curriculum import train_pool
from tasks.domain import domain_of, eval_problems
from tasks.failures import quiet_expected_failures, retry_on_infrastructure
from tasks.metering import now
from tasks.resume import fault_point

REPO_ROOT = Path(__file__).resolve().parent.parent


class PreflightError(ConfigError):
    """The config validates but cannot run here (missing data, missing model, unbuilt backend)."""


def new_run_id(experiment: str) -> str:
    return f"{experiment}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_run_id(run_id: str) -> str:
    """A run id names a folder under PIDISTILL_HOME: no separators, no way out of it."""
    if not _RUN_ID.match(run_id):
        raise ConfigError(
            f"--run-id {run_id!r}: use letters, digits, '.', '_' or '-' (at most 128, starting with a letter or digit)"
        )
    return run_id


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git sha of this checkout (+ '-dirty' with uncommitted changes), else 'unknown'."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


_PREFLIGHT_PASSED: set[str] = set()


def preflight(config: ExperimentConfig) -> None:
    """Everything that can be checked before a run writes anything; raises PreflightError.

    A config that passed once in this process is not checked again: the CLI checks before
    Prefect starts (a bad config fails in one line), then the flow's check is free."""
    # Every field (the config hash leaves out tracking and where things run, which preflight checks too) and the
    # devices this process sees.
    key = config.model_dump_json() + str(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if key not in _PREFLIGHT_PASSED:
        _preflight(config)
        _PREFLIGHT_PASSED.add(key)


def _check_chains(config: ExperimentConfig) -> None:
    """Concurrent chains (flows/chains.py): the GPUs local chains are pinned to exist (on Ray, Ray places them)."""
    from models.devices import device_sets, visible_devices

    if config.scale.executor == "ray":
        return
    try:
        device_sets(
            config.scale.chains, config.scale.gpus_per_chain, visible_devices() if config.scale.gpus_per_chain else []
        )
    except ConfigError as exc:
        raise PreflightError(str(exc)) from None


def _preflight(config: ExperimentConfig) -> None:
    if config.tracking.mlflow:  # a tracker that cannot take the run fails now, not after the run's compute
        from analysis.tracking import TrackingError, check_mlflow, mlflow_uri

        try:
            check_mlflow(mlflow_uri(config.tracking))
        except TrackingError as exc:
            raise PreflightError(f"tracking.mlflow: {exc}") from None
    if config.scale.chains > 1:
        _check_chains(config)
    checked: set[str] = set()  # arms that share the data (most do) load and compare it once
    runtimes: dict[str, tuple[Domain, ExperimentConfig, str]] = {}
    for arm in config.arms:
        cfg = config.for_arm(arm.name)
        where = f"arm {arm.name!r}: " if arm.set else ""
        data = cfg.domain.model_dump_json() + cfg.curriculum.model_dump_json()  # the curriculum sizes arith's pool
        if data not in checked:
            _check_data(cfg, where)
            checked.add(data)
        domain = domain_of(cfg)
        runtimes.setdefault(cfg.domain.model_dump_json(), (domain, cfg, where))
        _check_model(cfg.model.name_or_path, "model.name_or_path", where)
        if cfg.retry.model:
            _check_model(cfg.retry.model, "retry.model", where)
        if cfg.model.chat == "on":
            for name in filter(None, (cfg.model.name_or_path, cfg.retry.model)):
                _check_chat_template(name, where)
        if cfg.sampling.backend == "vllm":  # 'auto' always works: vLLM when importable on a GPU, else HF
            from models.sampling import vllm_available

            if not vllm_available():
                raise PreflightError(
                    f"{where}sampling.backend='vllm' but vllm is not installed: pip install 'pidistill[gpu]' "
                    "(GPU), or use the CPU build of the test lane (make test-vllm); or set sampling.backend=auto|hf"
                )
        if cfg.train.max_length is not None and cfg.train.max_length <= cfg.sampling.max_new_tokens:
            raise PreflightError(  # training would cut completions the sampler may write (their answers last)
                f"{where}train.max_length={cfg.train.max_length} does not fit a prompt plus "
                f"sampling.max_new_tokens={cfg.sampling.max_new_tokens}: raise it, or leave it empty (no cut)"
            )
        if cfg.train.processes > 1:
            _check_processes(cfg.train, cfg.model.device, where)
        if cfg.train.method == "opsd":
            _check_pi(cfg.train.opsd.pi, "train.opsd.pi", cfg, domain, where)
        if cfg.retry.max_retries > 0 and cfg.retry.strategy == "retry":
            _check_pi(cfg.retry.feedback, "retry.feedback", cfg, domain, where)
    # Last, what the machine lacks (a domain's own check: minif2f's Lean): what the config lacks is told first,
    # with its fix (lean-have-skeleton's reference proofs), also where Lean is not installed.
    for domain, cfg, where in runtimes.values():
        try:
            domain.preflight()  # e.g. minif2f: is Lean installed? (a no-op for most domains)
        except (DomainError, ValueError, FileNotFoundError, RuntimeError) as exc:
            raise PreflightError(f"{where}domain {cfg.domain.name}: {exc}") from None


def _check_data(cfg: ExperimentConfig, where: str) -> None:
    """The domain's data loads, and no evaluation problem is among the training problems a run can draw."""
    try:
        domain = domain_of(cfg)
        # A missing split or unreadable file fails now, not mid-run; a generated domain is cheap to draw
        # in full, so a setting with too few distinct problems for the sizes asked fails now too.
        if isinstance(domain, ArithDomain):
            domain.load("train", limit=cfg.domain.train_size)
        train, evals = train_pool(cfg), eval_problems(cfg)
    except (DomainError, ValueError, FileNotFoundError, RuntimeError) as exc:
        raise PreflightError(f"{where}domain {cfg.domain.name}: {exc}") from None
    if cfg.domain.decontaminate:
        _check_decontaminated(cfg, domain, train, evals, where)


def _check_decontaminated(
    cfg: ExperimentConfig, domain: Domain, train: list[Problem], evals: list[Problem], where: str
) -> None:
    """A run that trains on its own evaluation problems measures memory, not improvement (domains/decontam.py).
    arith's problems are one template that differ in numbers: compared verbatim only."""
    try:
        check_decontaminated(train, evals, near=not getattr(domain, "exact_duplicates_only", False))
    except Contaminated as exc:
        raise PreflightError(
            f"{where}domain {cfg.domain.name}: {exc}; remove them from the training data, or set "
            "domain.decontaminate=false to train on evaluation problems on purpose"
        ) from None


def _check_processes(t: TrainConfig, device: str, where: str) -> None:
    """Multi-process training (models/training/distributed.py): what its strategies can train."""
    from models.loading import resolve_device

    n = f"train.processes={t.processes}"
    if t.method == "opsd" and t.strategy != "ddp":
        raise PreflightError(  # OPSD's own loop wraps the student in DDP; sharding it is not built
            f"{where}{n} with train.strategy={t.strategy}: OPSD trains data-parallel (ddp) only; set train.strategy=ddp"
        )
    if t.method == "opsd" and t.opsd.batch_size < t.processes:
        raise PreflightError(
            f"{where}{n} with train.opsd.batch_size={t.opsd.batch_size}: every process rolls out its share of each "
            "batch; make the batch at least as large as the processes"
        )
    if t.strategy != "ddp" and t.peft == "lora":
        raise PreflightError(  # a LoRA adapter is merged into whole weights before saving; FSDP holds shards
            f"{where}train.strategy={t.strategy} with train.peft=lora: sharding is for full fine-tuning (a LoRA "
            "run's training state fits one GPU: use train.strategy=ddp)"
        )
    if t.strategy != "ddp" and resolve_device(device) == "cpu":
        raise PreflightError(  # Accelerate builds FSDP for accelerators only; on a CPU it would silently be DDP
            f"{where}train.strategy={t.strategy} needs GPUs: Accelerate shards on accelerators only; on a CPU "
            "use train.strategy=ddp"
        )


def _check_model(name: str, field: str, where: str) -> None:
    """A model must be the tiny model, a bundled one (installed), a local folder, or a hub id that is cached
    or reachable."""
    from models.bundled import BundledModelError, gguf_path, is_bundled

    if name == "tiny":
        return
    if is_bundled(name):
        try:
            gguf_path(name)
        except BundledModelError as exc:
            raise PreflightError(f"{where}{field}: {exc}") from None
        return
    if looks_like_path(name):
        if not Path(name).expanduser().is_dir():
            raise PreflightError(f"{where}{field}: no model folder at {name}")
        return
    from models.hub import hub_model_problem

    if problem := hub_model_problem(name):
        raise PreflightError(f"{where}{field}: {problem}")


def _check_chat_template(name: str, where: str) -> None:
    """model.chat=on needs a chat template: known for the tiny model (none) and for a local folder or a
    cached hub model (its tokenizer files); a bundled model has one; an uncached hub model is seen later."""
    if name == "tiny":
        raise PreflightError(f"{where}model.chat=on but the tiny model is a base model: set model.chat=off or auto")
    if looks_like_path(name):
        folder = Path(name).expanduser()
        config = folder / "tokenizer_config.json"
        has = (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file()
        if not has and config.is_file() and "chat_template" not in json.loads(config.read_text()):
            raise PreflightError(
                f"{where}model.chat=on but {name} has no chat template (a base model): set model.chat=off or auto"
            )


def _check_pi(kind: str, field: str, cfg: ExperimentConfig, domain: Domain, where: str) -> None:
    """Build the PI `kind` for real problems: a domain that cannot supply it fails now, not at the first retry.
    A kind made from the problem's reference is built for every problem a run can draw: a dataset may hold
    references for some problems only (minif2f's reference proofs come from a file)."""
    import random

    from domains.pi import FROM_REFERENCE, PIUnavailable, make_pi

    each = kind in FROM_REFERENCE
    problems = train_pool(cfg) if each else domain.load("train", limit=2)
    failures = []
    for problem in problems if each else problems[:1]:
        try:
            make_pi(kind, domain, problem, problems, random.Random(0), completion="x", feedback="y", diagnosis="z")
        except (PIUnavailable, ValueError) as exc:
            failures.append(exc)
    if failures:
        some = f"{len(failures)} of {len(problems)} training problems cannot supply it: " if each else ""
        raise PreflightError(f"{where}{field}={kind!r}: {some}{failures[0]}")


def data_hash(config: ExperimentConfig) -> str:
    return stable_hash(sorted({domain_of(config.for_arm(a.name)).data_hash() for a in config.arms}))


class RunInUse(NotRetryable, RuntimeError):
    """Another live process is writing this run."""


class RunFinal(NotRetryable, RuntimeError):
    """The run completed and its shards were compacted: nothing is left to resume or write."""


def run_row(run_id: str) -> dict | None:
    """The stored `runs` row of `run_id`, or None when there is none (yet)."""
    import pyarrow.parquet as pq

    path = home_dir() / run_id / "runs" / "run.parquet"
    if not path.exists():
        return None
    rows = pq.read_table(path).to_pylist()
    return rows[0] if rows else None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resumable(config: ExperimentConfig, run_id: str) -> dict | None:
    """None for a new run id; for an existing run, its row, after checking that `config` is the
    one it was started with (a different config under the same id would mix two experiments)."""
    row = run_row(run_id)
    if row is None:
        return None
    old, new = _flat(json.loads(row["config_json"])), _flat(json.loads(config.canonical_json()))
    # Compared field by field (not by hash): runs stored under an older hash function still resume.
    diff = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k) and k not in config.NOT_HASHED]
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
        raise ConfigError(
            f"--run-id {run_id}: that run was started with another config ({shown}"
            f"{', ...' if len(diff) > 5 else ''}); resume it with the same config, or use a new run id"
        )
    return row


@contextmanager
def run_lifecycle(config: ExperimentConfig, run_id: str) -> Iterator[None]:
    """Everything around an experiment's rounds: preflight, the run's lock, the resume check, the
    sweep of what a killed writer left, and the `runs` row (running, then completed or failed).

    The body runs with the lock held; any exception marks the run failed and propagates."""
    log = run_logger()
    quiet_expected_failures()
    check_run_id(run_id)
    preflight(config)
    with run_lock(run_id):
        previous = check_resumable(config, run_id)
        started = previous["started_at"] if previous else now()
        if previous:
            if previous["status"] == "completed" and is_compacted(run_id):
                raise RunFinal(
                    f"run {run_id} completed and its outputs are compacted: nothing to resume; "
                    "rerun the experiment under a new run id"
                )
            swept = sweep_temp_files(home_dir() / run_id)
            log.info(f"resuming run {run_id} (was {previous['status']}); discarded {len(swept)} partial files")
        write_run(config, run_id, "running", started)
        try:
            yield
        except BaseException as exc:
            write_run(config, run_id, "failed", started, error=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        # Before "completed": a run killed while compacting is still "running", and its resume
        # finishes the compaction (every stage is checkpointed, so nothing else runs again).
        compact(run_id, log)
        write_run(config, run_id, "completed", started)


def compact_completed(run_id: str, wait: float = 120.0) -> list[TableCompaction]:
    """`pidistill compact`: compact a completed run written before compaction existed, or one whose
    compaction was left undone. Takes the run's lock (RunInUse while a process writes it) and refuses
    a run that has not completed (a failed or running one may still be resumed and write shards)."""
    if run_row(run_id) is None:  # before the lock, which would make the run's folder
        raise ValueError(f"no run {run_id!r} in {home_dir()}")
    with run_lock(run_id):
        row = run_row(run_id)
        assert row is not None
        if row["status"] != "completed":
            raise ValueError(f"run {run_id} is {row['status']}: only completed runs are compacted")
        sweep_temp_files(home_dir() / run_id)  # a killed compaction's staging folder
        return compact_run(home_dir(), run_id, wait=wait, step=fault_point)


def is_compacted(run_id: str) -> bool:
    """Whether any table of the run was compacted (so it takes no more shards)."""
    return any(compacted(home_dir() / run_id, table) for table in TABLES)


def compact(run_id: str, log: logging.Logger | logging.LoggerAdapter) -> None:
    """Compact a run whose stages have all completed (the caller holds its lock). A run that cannot be
    compacted (queries that would not end, a filesystem without renameat2) stays correct as shards:
    warned, never failed. PIDISTILL_COMPACT=0 leaves every run as shards (a completed run can then
    be resumed, as before compaction existed)."""
    if os.environ.get("PIDISTILL_COMPACT", "1") == "0":
        log.info(f"run {run_id}: left as shards (PIDISTILL_COMPACT=0)")
        return
    t = time.perf_counter()
    try:
        done = compact_run(home_dir(), run_id, step=fault_point)
    except (CompactionError, OSError) as exc:
        log.warning(f"run {run_id}: left uncompacted ({exc}); `pidistill compact {run_id}` retries")
        return
    if done:
        files, rows = sum(d.files for d in done), sum(d.rows for d in done)
        log.info(
            f"run {run_id}: compacted {files} shards of {len(done)} tables ({rows} rows) into one file each "
            f"in {time.perf_counter() - t:.1f} s"
        )


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger (console and UI) inside a flow, else this module's."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@contextmanager
def run_lock(run_id: str) -> Iterator[None]:
    """Hold the run's lock while writing it. The OS drops the lock when the holder dies (even by
    SIGKILL), so a crashed run can be resumed at once, while a live one cannot be joined."""
    folder = home_dir() / run_id
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise RunInUse(
                f"run {run_id} is being written by another process (pid {holder}); wait for it, or stop it and resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_run(
    config: ExperimentConfig, run_id: str, status: str, started_at: datetime, error: str | None = None
) -> None:
    """(Re)write the run's row; `os.replace` makes each write whole."""
    row = {
        "run_id": run_id,
        "experiment": config.name,
        "config_json": config.canonical_json(),
        "config_hash": config.config_hash(),
        "code_version": code_version(),
        "data_hash": data_hash(config),
        "started_at": started_at,
        "finished_at": None if status == "running" else now(),
        "status": status,
        "error": error,
        "smoke": config.smoke,
    }
    write_rows(home_dir() / run_id / "runs" / "run.parquet", [row], "runs", readers=home_dir())  # rewritten in place


def retry_model_config(cfg: ExperimentConfig) -> ModelConfig | None:
    """The model config of cross-model retries ('tiny' means the same tiny recipe), or None."""
    if not cfg.retry.model:
        return None
    return cfg.model.model_copy(update={"name_or_path": cfg.retry.model})


@task(name="resolve-model", retries=1, retry_condition_fn=retry_on_infrastructure, cache_policy=NO_CACHE)
def resolve_model(model: ModelConfig) -> str:
    """A loadable model reference: the built tiny model's folder, a bundled model's converted folder, or the
    HF id / path as given."""
    from models.bundled import ensure_bundled_model, is_bundled

    if model.name_or_path == "tiny":
        from models.tiny import ensure_tiny_model

        return str(ensure_tiny_model(model.tiny))
    if is_bundled(model.name_or_path):
        return str(ensure_bundled_model(model.name_or_path))
    return model.name_or_path
