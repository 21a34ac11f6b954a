"""Run bookkeeping: checks before anything is written, the `runs` row, the model a run starts from.

    >>> preflight(cfg)               # raises PreflightError naming the field, writes nothing
    >>> rid = new_run_id("demo")     # 'demo-20261126-104512-3f2a'
"""

from __future__ import annotations

import functools
import secrets
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from domains import DomainError
from domains.base import stable_hash
from experiments.config import ConfigError, ExperimentConfig, ModelConfig
from storage.writer import home_dir, write_rows
from tasks.common import domain_of, now

REPO_ROOT = Path(__file__).resolve().parent.parent


class PreflightError(ConfigError):
    """The config validates but cannot run here (missing data, missing model, unbuilt backend)."""


def new_run_id(experiment: str) -> str:
    return f"{experiment}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git sha of this checkout (+ '-dirty' with uncommitted changes), else 'unknown'."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists()


def preflight(config: ExperimentConfig) -> None:
    """Everything that can be checked before a run writes anything; raises PreflightError."""
    for arm in config.arms:
        cfg = config.for_arm(arm.name)
        where = f"arm {arm.name!r}: " if arm.set else ""
        try:
            domain = domain_of(cfg)
            for split in ("train", "test"):  # a missing split or unreadable file fails now, not mid-run
                domain.load(split, limit=1)
            if hasattr(domain, "preflight"):  # e.g. minif2f: is Lean installed?
                domain.preflight()
        except (DomainError, ValueError, FileNotFoundError, RuntimeError) as exc:
            raise PreflightError(f"{where}domain {cfg.domain.name}: {exc}") from None
        name = cfg.model.name_or_path
        if name != "tiny" and _looks_local(name) and not Path(name).expanduser().is_dir():
            raise PreflightError(f"{where}model.name_or_path: no model folder at {name}")
        if cfg.sampling.backend == "vllm":  # 'auto' always works: vLLM when importable on a GPU, else HF
            from models.sampling import vllm_available

            if not vllm_available():
                raise PreflightError(
                    f"{where}sampling.backend='vllm' but vllm is not installed: pip install 'pidistill[gpu]' "
                    "(GPU), or use the CPU build of the test lane (make test-vllm); or set sampling.backend=auto|hf"
                )
        if cfg.train.method == "opsd":
            _check_pi(cfg.train.opsd.pi, "train.opsd.pi", domain, where)
        if cfg.retry.max_retries > 0 and cfg.retry.strategy == "retry":
            _check_pi(cfg.retry.feedback, "retry.feedback", domain, where)
        if cfg.retry.model and cfg.retry.model != "tiny" and _looks_local(cfg.retry.model) \
                and not Path(cfg.retry.model).expanduser().is_dir():
            raise PreflightError(f"{where}retry.model: no model folder at {cfg.retry.model}")


def _check_pi(kind: str, field: str, domain, where: str) -> None:
    """Build the PI `kind` once for a real problem: a domain that cannot supply it fails now."""
    import random

    from tasks.retry import PIUnavailable, make_pi

    problems = domain.load("train", limit=2)
    row = {"completion": "x", "feedback": "y", "attempt_id": "a"}
    try:
        make_pi(kind, domain, problems[0], row, problems, random.Random(0), "z")
    except (PIUnavailable, ValueError) as exc:
        raise PreflightError(f"{where}{field}={kind!r}: {exc}") from None


def data_hash(config: ExperimentConfig) -> str:
    return stable_hash(sorted({domain_of(config.for_arm(a.name)).data_hash() for a in config.arms}))


def write_run(config: ExperimentConfig, run_id: str, status: str, started_at: datetime, error: str | None = None) -> None:
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
    }
    write_rows(home_dir() / run_id / "runs" / "run.parquet", [row], "runs")


def retry_model_config(cfg: ExperimentConfig) -> ModelConfig | None:
    """The model config of cross-model retries ('tiny' means the same tiny recipe), or None."""
    if not cfg.retry.model:
        return None
    return cfg.model.model_copy(update={"name_or_path": cfg.retry.model})


@task(name="resolve-model", retries=1, cache_policy=NO_CACHE)
def resolve_model(model: ModelConfig) -> str:
    """A loadable model reference: the built tiny model's folder, or the HF id / path as given."""
    if model.name_or_path == "tiny":
        from models.tiny import ensure_tiny_model

        return str(ensure_tiny_model(model.tiny))
    return model.name_or_path
