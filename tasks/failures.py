"""Which failures Prefect retries: infrastructure (memory, devices, connections, crashed workers), never data.

    >>> is_infrastructure_failure(MemoryError())          # True: another try may get the memory
    >>> is_infrastructure_failure(PILeak("..."))          # False: a NotRetryable fails at once

Classified by exception type. The one exception: torch reports CUDA and NCCL driver failures as
a bare RuntimeError, so a RuntimeError is infrastructure when its message names the device layer.
"""

from __future__ import annotations

import logging
from typing import Any

from domains.errors import NotRetryable

# Data and programming errors: a retry repeats them.
_NEVER = (NotRetryable, ValueError, KeyError, TypeError, AssertionError)
# Machine failures by type; the class names cover libraries this module does not import (torch, Ray, sandbox).
_INFRA_TYPES = (MemoryError, OSError, TimeoutError)
_INFRA_NAMES = {
    "OutOfMemoryError",
    "SandboxError",
    "RayTaskError",
    "WorkerCrashedError",
    "ActorDiedError",
    "DistBackendError",
}
_CUDA_WORDS = ("out of memory", "cuda", "nccl", "cublas", "cudnn", "device-side")


def is_infrastructure_failure(exc: BaseException | None) -> bool:
    """A failure of the machine, not of the data or the code path. Only these are worth retrying."""
    if exc is None or isinstance(exc, _NEVER):
        return False
    if isinstance(exc, _INFRA_TYPES) or {c.__name__ for c in type(exc).__mro__} & _INFRA_NAMES:
        return True
    return type(exc) is RuntimeError and any(w in str(exc).lower() for w in _CUDA_WORDS)


_ROUTINE = ("Finished in state Completed(", "Finished in state Cached(")


class _OneLine(logging.Filter):
    """Drops the traceback from Prefect's log record of a NotRetryable failure: bad input is said in its
    message (one line in the console and the UI); a traceback is for bugs and machines. Drops Prefect's
    "Finished in state Completed()" line of every task and subflow too: two dozen per round, they buried
    the round summaries (a failure, a retry or a crash is still logged; the UI shows every state)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(_ROUTINE):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, NotRetryable):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_expected_failures() -> None:
    """Install `_OneLine` on Prefect's flow and task run loggers (once per process): the console and the
    API log handler both sit below these loggers, so neither gets what it drops."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLine) for f in logger.filters):
            logger.addFilter(_OneLine())


def retry_on_infrastructure(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a failed stage only for an infrastructure failure.
    A wrong answer is a verdict, never an exception, so it is never retried."""
    try:
        exc = state.result(raise_on_failure=False)
    except BaseException as e:  # the state's own exception
        exc = e
    return is_infrastructure_failure(exc if isinstance(exc, BaseException) else None)
