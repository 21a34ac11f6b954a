"""`_CodeDomain`: what MBPP and HumanEval share: where the data comes from, the sandbox the
domain owns, batched checking, and the verdict cache.

Checking one completion: the subclass's `solution_and_spec` extracts the code and builds the
test spec (`domains.code.specs`), the harness runs it in the sandbox, and its report becomes a
`Verdict` (`domains.code.verdicts`). For mbpp/11 and the completion

    ```python
    def remove_Occ(s, ch):
        return s.strip(ch)
    ```

that is `Verdict(status="fail", passed=False, score=2/3,
feedback='Test failed: assert remove_Occ("hello","l") == "heo"\\nGot: \'hello\'')`.

Verdict cache: an in-memory LRU per domain instance (`cache_size` entries; 0: none) keyed by
a hash of (problem id, the exact program run — extracted code plus tests — and the limits), so
a retry or re-evaluation of identical code never runs it again. It lives as long as the domain
object and is not shared across processes (nor pickled). Verifier errors are not cached: they
are infrastructure failures, worth retrying.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from domains import DomainError, data_root
from domains.base import BaseDomain, Problem, Verdict, file_sha256, stable_hash
from domains.code.flags import code_flags
from domains.code.specs import HARNESS_MODULE, HarnessSpec, harness_call, harness_prelude, harness_program
from domains.code.verdicts import verdict_from_run
from domains.data import looks_like_path
from sandbox import ExecResult, Limits, Program, Sandbox


def _joined(*flags: str | None) -> str | None:
    """Flag lists (comma-separated) as one sorted list; None when all are empty."""
    return ",".join(sorted({f for fs in flags if fs for f in fs.split(",")})) or None


class _CodeDomain(BaseDomain):
    """Sandbox, verdict cache and batched checking shared by MBPP and HumanEval."""

    default_file: str = ""
    required_fields: tuple[str, ...] = ()

    def __init__(
        self,
        path: str | None = None,
        *,
        timeout_s: float = 5.0,
        memory_mb: int = 1024,
        workers: int | None = None,
        isolation: str = "auto",
        cache_size: int = 50_000,
        sandbox: Sandbox | None = None,
        hf_config: str | None = None,
    ) -> None:
        self.path = path
        self.hf_config = hf_config
        if path is None:
            self._source: Path | str = data_root() / self.default_file
        elif looks_like_path(path):
            self._source = Path(path).expanduser()
        else:
            self._source = path  # an HF dataset name
        if isinstance(self._source, Path) and not self._source.is_file():
            raise DomainError(f"{self.name} data file not found: {self._source}")
        self.limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb)
        self._workers = workers
        self._isolation = isolation
        self._cache_size = cache_size
        self._external_sandbox = sandbox
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._sandbox: Sandbox | None = None
        self._lock = threading.Lock()
        self._cache: LRUCache[str, Verdict] = LRUCache(maxsize=self._cache_size)

    # -- pickling (e.g. by a process-pool task runner): drop the live sandbox and the cache
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_sandbox", "_lock", "_cache", "_external_sandbox"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._external_sandbox = None
        self._init_runtime()

    @property
    def sandbox(self) -> Sandbox:
        if self._external_sandbox is not None:
            return self._external_sandbox
        with self._lock:
            # (re)created lazily, also in a forked child: a sandbox belongs to the process that made it
            if self._sandbox is None or self._sandbox._owner_pid != os.getpid():
                self._sandbox = Sandbox(
                    self.limits,
                    workers=self._workers,
                    isolation=self._isolation,  # type: ignore[arg-type]
                    prelude=harness_prelude(),
                )
            return self._sandbox

    def close(self) -> None:
        """Stop the domain's own sandbox workers (a sandbox passed in is left to its owner)."""
        with self._lock:
            if self._sandbox is not None:
                self._sandbox.close()
                self._sandbox = None

    def data_hash(self) -> str:
        if isinstance(self._source, Path):
            return file_sha256(self._source)
        return stable_hash({"hf": self._source, "config": self.hf_config, "domain": self.name})

    # -- checking

    def solution_and_spec(self, problem: Problem, completion: str) -> tuple[str, HarnessSpec]:
        raise NotImplementedError

    def check(self, problem: Problem, completion: str) -> Verdict:
        return self.check_many([problem], [completion])[0]

    def check_many(self, problems: list[Problem], completions: list[str]) -> list[Verdict]:
        """Verdicts in input order. Identical (problem, code) pairs run once, cached ones not at all.
        Programs go to the sandbox in slices as they are built, so that its workers are busy while
        the host still builds test harnesses (the first time a problem is seen, that is real work)."""
        if len(problems) != len(completions):
            raise ValueError(f"check_many: {len(problems)} problems but {len(completions)} completions")
        verdicts: list[Verdict | None] = [None] * len(problems)
        sandbox = self.sandbox
        if len(problems) > 1 and hasattr(sandbox, "start"):
            sandbox.start()  # workers boot while the first programs are built
        as_call = getattr(sandbox, "prelude", {}).get(HARNESS_MODULE) == harness_prelude()[HARNESS_MODULE]
        todo: dict[str, list[int]] = {}  # cache key -> indices (identical programs run once)
        plans: dict[str, tuple[str, HarnessSpec, str]] = {}  # cache key -> solution, spec, nonce
        runs: list[tuple[list[str], Future[list[ExecResult]]]] = []
        pending: list[str] = []

        with ThreadPoolExecutor(4, thread_name_prefix="check") as pool:

            def submit(inline: bool = False) -> None:
                keys = list(pending)
                pending.clear()
                if as_call:
                    programs: list[Program] = [harness_call(*plans[k]) for k in keys]
                else:  # a sandbox passed in without our prelude: the harness travels with each program
                    programs = [harness_program(*plans[k]) for k in keys]
                if inline:  # the last slice: this thread would only wait anyway
                    done: Future[list[ExecResult]] = Future()
                    done.set_result(sandbox.run_many(programs, self.limits))
                    runs.append((keys, done))
                else:
                    runs.append((keys, pool.submit(sandbox.run_many, programs, self.limits)))

            for i, (p, c) in enumerate(zip(problems, completions)):
                try:
                    solution, spec = self.solution_and_spec(p, c)
                except Exception as exc:  # a problem we cannot build a harness for: verifier error
                    verdicts[i] = Verdict.error(f"cannot build the test program: {type(exc).__name__}: {exc}")
                    continue
                if not c.strip() or not solution.strip():  # nothing to run: counted apart from wrong code
                    verdicts[i] = Verdict("fail", False, 0.0, "no code found in the completion", reason="no_answer")
                    continue
                key = self._cache_key(p.problem_id, solution, spec)
                if key in todo:
                    todo[key].append(i)
                    continue
                with self._lock:
                    cached = self._cache.get(key)
                if cached is not None:
                    verdicts[i] = cached
                    continue
                todo[key] = [i]
                plans[key] = (solution, spec, secrets.token_hex(8))
                pending.append(key)
                if len(pending) >= _CHECK_SLICE << min(len(runs), 4):  # 32, 64, ... 512: start soon,
                    submit()  # then keep batches big (small slices mean more round trips)
            if pending:
                submit(inline=True)
            for keys, future in runs:
                for key, r in zip(keys, future.result()):
                    spec, nonce = plans[key][1], plans[key][2]
                    try:
                        v = verdict_from_run(spec, nonce, r, self.limits.timeout_s)
                    except Exception as exc:
                        v = Verdict.crashed(exc)
                    v = replace(v, flags=_joined(v.flags, code_flags(plans[key][0])))  # pass or fail: recorded
                    # not verifier errors: infrastructure failures are worth retrying (and cache_size=0:
                    # no cache, for LRUCache refuses an entry larger than its maxsize)
                    if v.status != "error" and self._cache_size > 0:
                        with self._lock:
                            self._cache[key] = v
                    for i in todo[key]:
                        verdicts[i] = v
        return [v if v is not None else Verdict.error("internal: no verdict") for v in verdicts]

    def _cache_key(self, problem_id: str, solution: str, spec: HarnessSpec) -> str:
        blob = json.dumps([problem_id, solution, spec.digest, _limits_key(self.limits)])
        return hashlib.sha256(blob.encode()).hexdigest()

    def _hf_rows(self, split: str) -> list[dict[str, Any]]:
        import datasets  # only when asked for a hub dataset

        return [dict(r) for r in datasets.load_dataset(str(self._source), self.hf_config, split=split)]


_CHECK_SLICE = 32  # programs in check_many's first sandbox call; each next one doubles (to 512)


@functools.lru_cache(maxsize=64)
def _limits_key(limits: Limits) -> tuple:
    return astuple(limits)
