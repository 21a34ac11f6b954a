"""Problem domains behind one protocol (`domains.base.Domain`).

>>> from domains import get_domain
>>> d = get_domain("gsm8k")                              # ../shared/data/gsm8k (or $PIDISTILL_DATA)
>>> d = get_domain("gsm8k", path="other/test.jsonl")     # same format, another file: one split, as-is
>>> d = get_domain("gsm8k", path="openai/gsm8k")         # an HF dataset name (needs the hub)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from domains.base import BaseDomain, Domain, Problem, Verdict, safe_check
from domains.data import DomainError
from domains.pi import PIUnavailable, PrivilegedInfo

__all__ = [
    "BaseDomain",
    "Domain",
    "DomainError",
    "PIUnavailable",
    "PrivilegedInfo",
    "Problem",
    "Verdict",
    "data_root",
    "domain_names",
    "get_domain",
    "safe_check",
]

# name -> "module:factory". Modules are imported on first use so that e.g. the
# Lean domain's imports cost nothing to a math run.
_REGISTRY: dict[str, str] = {
    "arith": "domains.arith:ArithDomain",
    "gsm8k": "domains.gsm8k:GSM8KDomain",
    "mbpp": "domains.code:MBPPDomain",
    "humaneval": "domains.code:HumanEvalDomain",
    "minif2f": "domains.lean:MiniF2FDomain",
}


def domain_names() -> list[str]:
    return sorted(_REGISTRY)


def data_root() -> Path:
    """Where the bundled datasets live: $PIDISTILL_DATA, else ../shared/data next to the repo."""
    env = os.environ.get("PIDISTILL_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def get_domain(name: str, path: str | None = None, **options: Any) -> Domain:
    """Build the domain `name`; `path` points it at another file (or HF dataset) of the same format."""
    if name not in _REGISTRY:
        raise DomainError(f"unknown domain {name!r}; known: {', '.join(domain_names())}")
    module_name, _, factory = _REGISTRY[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise DomainError(f"domain {name!r} is not available in this build ({module_name} missing)") from exc
        raise
    return getattr(module, factory)(path=path, **options)
