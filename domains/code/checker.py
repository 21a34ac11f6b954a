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
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from domains import DomainError, data_root
from domains.base import BaseDomain, Problem, Verdict, file_sha256, stable_hash
from domains.code import plain
from domains.code.flags import code_flags
from domains.code.specs import HarnessSpec, SpecError, harness_call, harness_prelude, harness_program
from domains.code.verdicts import ChannelTampered, NoReport, Report, judge_tests, parse_report, step_outcomes, verdict
from domains.data import looks_like_path
from sandbox import ExecResult, Limits, Program, Sandbox

log = logging.getLogger(__name__)


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
        extra_tests: int = 0,
        allow_shared_uid: bool = False,
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
        if not isinstance(extra_tests, int) or extra_tests < 0:
            raise DomainError(f"{self.name}: extra_tests must be an int >= 0, got {extra_tests!r}")
        self.extra_tests = extra_tests
        self.allow_shared_uid = allow_shared_uid
        self._workers = workers
        self._isolation = isolation
        self._cache_size = cache_size
        self._external_sandbox = sandbox
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._sandbox: Sandbox | None = None
        self._lock = threading.Lock()
        self._cache: LRUCache[str, Verdict] = LRUCache(maxsize=self._cache_size)
        self._specs: dict[str, HarnessSpec | str] = {}  # problem id -> finished spec, or why it has none

    # -- pickling (e.g. by a process-pool task runner): drop the live sandbox and the cache
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_sandbox", "_lock", "_cache", "_external_sandbox", "_specs"):
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

    def _separated_sandbox(self) -> Sandbox:
        """The sandbox, if programs run under a uid of their own. Without one (not root), a program
        shares the sandbox server's uid and could forge the replies of its whole batch: refuse."""
        sandbox = self.sandbox
        # (a stand-in sandbox passed in without the property is taken at its word)
        if not getattr(sandbox, "uid_separated", True) and not self.allow_shared_uid:
            raise DomainError(
                f"{self.name}: code verification needs programs to run under a uid of their own, which takes "
                "root (the sandbox drops each program to a throw-away uid): run as root (e.g. in the docker "
                "image); without it a program could forge its batch's results (`pidistill doctor` says so). "
                "allow_shared_uid=True accepts that risk (tests only)."
            )
        return sandbox

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

    def extract(self, problem: Problem, completion: str) -> str:
        """The program a completion stands for (the code in it)."""
        raise NotImplementedError

    def _draft(self, problem: Problem) -> tuple[dict[str, Any] | None, Callable[[dict[str, Any] | None], HarnessSpec]]:
        """A problem's spec before its reference solution ran: the payload of harness.plan (None when
        nothing needs the reference) and how the plan's answer finishes the spec."""
        raise NotImplementedError

    def spec_of(self, problem: Problem) -> HarnessSpec:
        """The problem's finished spec (planned with its reference solution the first time); SpecError
        when the problem cannot be judged."""
        spec = self._specs_for([problem])[problem.problem_id]
        if isinstance(spec, str):
            raise SpecError(spec)
        return spec

    def _specs_for(self, problems: list[Problem]) -> dict[str, HarnessSpec | str]:
        """Finished specs of `problems`, or why one cannot be judged. New problems that need their
        reference solution are planned in one sandbox batch; specs are kept for the domain's life."""
        todo: dict[str, tuple[dict[str, Any] | None, Callable[[dict[str, Any] | None], HarnessSpec]]] = {}
        for p in problems:
            if p.problem_id in self._specs or p.problem_id in todo:
                continue
            try:
                todo[p.problem_id] = self._draft(p)
            except (SyntaxError, ValueError) as exc:  # SpecError is a ValueError
                self._specs[p.problem_id] = f"cannot judge {p.problem_id}: {exc}"
        planned = [pid for pid, (payload, _) in todo.items() if payload is not None]
        if planned:
            limits = replace(self.limits, timeout_s=max(self.limits.timeout_s, _PLAN_TIMEOUT_S))
            runs = self.sandbox.run_many([self._program("plan", todo[pid][0] or {}) for pid in planned], limits)
            answers = dict(zip(planned, runs))
        for pid, (payload, finish) in todo.items():
            try:
                plan = None if payload is None else _trusted_answer(answers[pid], "plan")
                self._specs[pid] = finish(plan)
            except SpecError as exc:
                log.warning("%s: %s", pid, exc)
                self._specs[pid] = f"cannot judge {pid}: {exc}"
        return {p.problem_id: self._specs[p.problem_id] for p in problems}

    def _program(self, function: str, payload: dict[str, Any]) -> Program:
        sandbox = self.sandbox
        prelude = getattr(sandbox, "prelude", {})
        if all(prelude.get(k) == v for k, v in harness_prelude().items()):
            return harness_call(function, payload)
        return harness_program(function, payload)  # a sandbox passed in without our prelude

    def check(self, problem: Problem, completion: str) -> Verdict:
        return self.check_many([problem], [completion])[0]

    def check_many(self, problems: list[Problem], completions: list[str]) -> list[Verdict]:
        """Verdicts in input order. Identical (problem, code) pairs run once, cached ones not at all.
        Programs go to the sandbox in slices as they are built, so that its workers are busy while
        the host still builds payloads; HumanEval's judge replays run after, in one batch."""
        if len(problems) != len(completions):
            raise ValueError(f"check_many: {len(problems)} problems but {len(completions)} completions")
        verdicts: list[Verdict | None] = [None] * len(problems)
        sandbox = self._separated_sandbox()
        if len(problems) > 1 and hasattr(sandbox, "start"):
            sandbox.start()  # workers boot while the first programs are built
        specs = self._specs_for(problems)
        todo: dict[str, list[int]] = {}  # cache key -> indices (identical programs run once)
        jobs: dict[str, tuple[str, HarnessSpec]] = {}  # cache key -> solution, spec
        runs: list[tuple[list[str], Future[list[ExecResult]]]] = []
        pending: list[str] = []

        with ThreadPoolExecutor(4, thread_name_prefix="check") as pool:

            def submit(inline: bool = False) -> None:
                keys = list(pending)
                pending.clear()
                programs = [self._program("run", {"solution": jobs[k][0], **jobs[k][1].payload()}) for k in keys]
                if inline:  # the last slice: this thread would only wait anyway
                    done: Future[list[ExecResult]] = Future()
                    done.set_result(sandbox.run_many(programs, self.limits))
                    runs.append((keys, done))
                else:
                    runs.append((keys, pool.submit(sandbox.run_many, programs, self.limits)))

            for i, (p, c) in enumerate(zip(problems, completions)):
                spec = specs[p.problem_id]
                if isinstance(spec, str):  # the problem cannot be judged: the verifier's failure
                    verdicts[i] = Verdict.error(spec)
                    continue
                try:
                    solution = self.extract(p, c)
                except Exception as exc:  # whatever the completion holds is its own fail, never an error
                    verdicts[i] = Verdict(
                        "fail", False, 0.0, f"no code could be read: {type(exc).__name__}", flags="extract"
                    )
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
                jobs[key] = (solution, spec)
                pending.append(key)
                if len(pending) >= _CHECK_SLICE << min(len(runs), 4):  # 32, 64, ... 512: start soon,
                    submit()  # then keep batches big (small slices mean more round trips)
            if pending:
                submit(inline=True)
            results = {key: r for keys, future in runs for key, r in zip(keys, future.result())}
        for key, v in self._judged(jobs, results).items():
            v = replace(v, flags=_joined(v.flags, code_flags(jobs[key][0])))  # pass or fail: recorded
            # not verifier errors: infrastructure failures are worth retrying (and cache_size=0:
            # no cache, for LRUCache refuses an entry larger than its maxsize)
            if v.status != "error" and self._cache_size > 0:
                with self._lock:
                    self._cache[key] = v
            for i in todo[key]:
                verdicts[i] = v
        return [v if v is not None else Verdict.error("internal: no verdict") for v in verdicts]

    def _judged(self, jobs: dict[str, tuple[str, HarnessSpec]], results: dict[str, ExecResult]) -> dict[str, Verdict]:
        """Each run judged: on the host (its tests' judgements over its outputs), and for HumanEval by
        replaying `check` against its recorded outputs, in one sandbox batch of judge programs."""
        out: dict[str, Verdict] = {}
        replays: dict[str, tuple[Report, dict[str, Any]]] = {}
        for key, (_solution, spec) in jobs.items():
            r = results[key]
            try:
                try:
                    rep = parse_report(r.stdout, spec.n_probes)
                except (ChannelTampered, NoReport):
                    out[key] = verdict(spec, r, None, self.limits.timeout_s)  # says how it was tampered with
                    continue
                if spec.check is None or not rep.loaded or (r.sandbox_error and not r.program_ran):
                    out[key] = verdict(spec, r, None, self.limits.timeout_s, rep)
                else:
                    replays[key] = (rep, spec.check.payload(_recorded(spec, rep)))
            except Exception as exc:  # a bug of ours: an ERROR verdict, never a wrong answer
                out[key] = Verdict.crashed(exc)
        if replays:
            keys = list(replays)
            judged = self.sandbox.run_many([self._program("judge", replays[k][1]) for k in keys], self.limits)
            for key, j in zip(keys, judged):
                try:
                    out[key] = self._replayed(jobs[key][1], results[key], replays[key][0], j)
                except Exception as exc:
                    out[key] = Verdict.crashed(exc)
        return out

    def _replayed(self, spec: HarnessSpec, r: ExecResult, rep: Report, j: ExecResult) -> Verdict:
        """HumanEval's verdict from the judge's replay `j` of check() over the candidate's outputs."""
        assert spec.check is not None
        if not j.sandbox_error and j.status != "ok":
            # The judge is the dataset's code and ran fine on the reference's outputs: what it could
            # not finish on (too slow, too much memory, a crash) is this candidate's outputs.
            why = f"The tests could not be judged on the solution's outputs (judge {j.status})."
            return Verdict("timeout" if j.status == "timeout" else "fail", False, 0.0, why)
        try:
            steps = step_outcomes(_trusted_answer(j, "judge"), len(spec.check.steps))
        except SpecError as exc:
            steps = str(exc)
        if isinstance(steps, str):
            return Verdict.error(f"the judge of {spec.check.seed} failed: {steps}")
        return verdict(spec, r, steps + judge_tests(spec.tests, rep), self.limits.timeout_s, rep)

    def _cache_key(self, problem_id: str, solution: str, spec: HarnessSpec) -> str:
        blob = json.dumps([problem_id, solution, spec.digest, _limits_key(self.limits)])
        return hashlib.sha256(blob.encode()).hexdigest()

    def _hf_rows(self, split: str) -> list[dict[str, Any]]:
        import datasets  # only when asked for a hub dataset

        return [dict(r) for r in datasets.load_dataset(str(self._source), self.hf_config, split=split)]


_CHECK_SLICE = 32  # programs in check_many's first sandbox call; each next one doubles (to 512)
_PLAN_TIMEOUT_S = 120.0  # the reference on up to 4 x extra_tests inputs, twice each, <= 0.2 s per call


def _recorded(spec: HarnessSpec, rep: Report) -> dict[str, list[str]]:
    """The candidate's outputs for HumanEval's judge, by call: ["v", plain json] | ["e", error].
    A call it never answered (a timeout) is left out; the judge then fails the step that needs it."""
    out: dict[str, list[str]] = {}
    for args, (tag, value) in zip(spec.calls, rep.values[len(spec.exprs) :]):
        if tag == "v":
            out[args] = ["v", plain.dumps(value)]
        else:  # an exception, or an output that is not plain data: the step fails with this text
            out[args] = ["e", value if tag == "e" else f"NotPlainData: the solution {value}"]
    return out


def _trusted_answer(r: ExecResult, kind: str) -> dict[str, Any]:
    """The one JSON document `plan` or `judge` prints (trusted code: no candidate ran there)."""
    if r.sandbox_error:
        raise SpecError(f"the {kind} program could not run: {r.sandbox_error}")
    head, _, body = r.stdout.partition(" ")
    if head != kind or r.status != "ok":
        raise SpecError(f"the {kind} program ended {r.status}: {(r.stderr or r.stdout)[-400:]}")
    try:
        answer = json.loads(body)
    except ValueError as exc:
        raise SpecError(f"the {kind} program's answer is not JSON: {body[:200]!r}") from exc
    if not isinstance(answer, dict):
        raise SpecError(f"the {kind} program's answer is not an object: {body[:200]!r}")
    return answer


@functools.lru_cache(maxsize=64)
def _limits_key(limits: Limits) -> tuple:
    return astuple(limits)
