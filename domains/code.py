"""`mbpp` and `humaneval`: Python programming problems checked by running unit tests in the sandbox.

    >>> from domains import get_domain
    >>> d = get_domain("mbpp")
    >>> p = d.load("test", limit=1)[0]                  # mbpp/11
    >>> v = d.check(p, "```python\\ndef remove_Occ(s, ch):\\n    return s.strip(ch)\\n```")
    >>> v.status, v.passed, round(v.score, 2)           # 2 of its 3 asserts pass
    ('fail', False, 0.67)
    >>> d.check(p, p.solution).passed
    True

Where the data comes from (`path`):
- None: `<data_root>/mbpp/mbpp.jsonl` / `<data_root>/humaneval/HumanEval.jsonl.gz` (bundled copies);
- a file (.jsonl or .jsonl.gz) in the same format;
- anything else: an HF dataset name (`google-research-datasets/mbpp`, `openai/openai_humaneval`).

Splits. MBPP uses its official task-id ranges (also for a local file): `test` = 11-510,
`prompt` = 1-10 (few-shot), `validation` = 511-600, `train` = 601-974; pass
`split_by_task_id=False` to use a file as-is for every split. HumanEval is an evaluation
benchmark with one split, `test`; `load("train")` raises DomainError unless the domain was
built with `train_on_test=True` (an explicit opt-in to training on the evaluation problems,
e.g. for test-time self-improvement), which returns the same problems.

Checking. The completion's code is extracted (a fenced ```python block, else the bare text;
for HumanEval either a full function or the body continuing the prompt), embedded in a
harness program and run in the sandbox (`sandbox.Sandbox`). The harness runs each test
statement on its own (MBPP: each assert; HumanEval: each statement of `check(candidate)`)
and reports per-test results on a private, nonce-tagged stdout channel (the solution's own
prints go to /dev/null), so every check yields both a binary verdict (all tests pass) and a
graded score (fraction of tests passed). Verdict status: pass | fail (tests ran and some
failed, including syntax errors and exceptions in the model's code) | timeout (the sandbox
timeout hit; the score counts the tests passed before it) | error (the verifier itself failed).

The harness guards against accidents (solutions that print, exit, shadow names, crash); it
is not meant to withstand code written to fool it (e.g. returning an object whose `__eq__`
is always true): that is a limit of in-process unit testing, and the sandbox still contains
such code.

Verdict cache: an in-memory LRU per domain instance (`cache_size` entries) keyed by a hash
of (problem id, the exact program run — extracted code plus tests — and the limits), so a
retry or re-evaluation of identical code never runs it again. It lives as long as the domain
object and is not shared across processes.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import json
import marshal
import os
import re
import secrets
import sys
import textwrap
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any

from domains import DomainError, data_root
from domains.base import BaseDomain, PrivilegedInfo, Problem, Verdict, file_sha256, pi_section, stable_hash
from sandbox import Call, ExecResult, Limits, Program, Sandbox

FEEDBACK_CHARS = 500

# ----------------------------------------------------------------------------- code extraction

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_LANG_TAG = re.compile(r"[ \t]*[A-Za-z0-9_+.-]+[ \t]*\n")
_PY_LANGS = ("", "python", "py", "python3", "py3")
_MARKERS = re.compile(r"^\s*\[(BEGIN|DONE)\]\s*$", re.M)


def extract_code(completion: str, *, fence_open: bool = False, entry_point: str | None = None) -> str:
    """The Python code in a model completion.

    fence_open: the prompt ended inside an opened ```python fence, so the completion starts
    with code and a closing ``` (if any) ends it. Otherwise the first fenced Python block is
    taken (the first defining `entry_point`, when given), else the whole text.

    >>> extract_code("Here:\\n```python\\nx = 1\\n```\\nDone.")
    'x = 1\\n'
    >>> extract_code("x = 1\\n```\\ntrailing prose", fence_open=True)
    'x = 1\\n'
    """
    text = _MARKERS.sub("", completion.replace("\r\n", "\n"))
    if fence_open:
        head, fence, rest = text.partition("```")
        if head.strip() or not fence:
            return head
        if not _LANG_TAG.match(rest):
            text = rest  # the model closed our fence at once; look at what follows
        # else: it opened a fence of its own (```python ...): an ordinary fenced completion
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text) if body.strip()]
    if not blocks:
        head, _, rest = text.partition("```")  # a lone fence: the code is on one side of it
        return head if head.strip() else rest
    python = [body for lang, body in blocks if lang in _PY_LANGS] or [body for _, body in blocks]
    if entry_point:
        for body in python:
            if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", body, re.M):
                return body
    return python[0]


def _defines_function(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:  # a broken full function still counts as one (its error is the feedback)
        return re.search(rf"^def\s+{re.escape(name)}\s*\(", code, re.M) is not None
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def humaneval_solution(prompt: str, completion: str, entry_point: str) -> str:
    """The program a HumanEval completion stands for: a full function (defined after the prompt,
    so it replaces the prompt's stub but keeps its imports and helpers) or a body continuing it."""
    code = extract_code(completion, entry_point=entry_point)
    if _defines_function(code, entry_point):
        return prompt + "\n" + code
    first = next((line for line in code.splitlines() if line.strip()), "")
    if first and not first[0].isspace() and not first.startswith(("def ", "class ", "import ", "from ", "@")):
        code = textwrap.indent(code, "    ")  # an unindented body: put it inside the function
    return prompt + code


# ----------------------------------------------------------------------------- the test harness

# Runs inside the sandbox. The solution gets its own namespace (not __main__, so its
# `if __name__ == "__main__":` demo code does not run) and its stdout is sent to /dev/null;
# results go to a duplicate of the original stdout, one nonce-tagged JSON line each, and
# are emitted as each test finishes so that a timeout still tells which tests passed.
HARNESS_MODULE = "pidistill_harness"
_HARNESS = r'''
import builtins, json, linecache, marshal, os, sys


_json_str = json.encoder.encode_basestring_ascii  # messages are formatted by hand: a first
# json.dumps in a freshly forked child touches ~40 pages (each a copy-on-write fault)


def run(spec, nonce):
    out = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    prefix = nonce + " "

    def emit(body):
        data = (prefix + body + "\n").encode()
        while data:
            data = data[os.write(out, data):]

    try:
        _run(spec, emit)
    finally:
        os.dup2(out, 1)
        os.close(out)
        os.close(null)


def _describe(exc, solution):
    if isinstance(exc, SyntaxError) and exc.filename == "solution.py":
        where = f" (line {exc.lineno}: {(exc.text or '').strip()[:120]})" if exc.lineno else ""
        return f"SyntaxError: {exc.msg}{where}"
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    tb, last = exc.__traceback__, None
    while tb is not None:  # the innermost frame in the solution
        if tb.tb_frame.f_code.co_filename == "solution.py":
            last = tb
        tb = tb.tb_next
    if last is not None:
        if "solution.py" not in linecache.cache:  # set when first needed (passing code never does)
            linecache.cache["solution.py"] = (len(solution), None, solution.splitlines(True), "solution.py")
        line = linecache.getline("solution.py", last.tb_lineno).strip()
        text += f" (solution.py line {last.tb_lineno}: {line[:120]})"
    return text[:600]


def _compiled(spec):
    """The host's compilation of setup and steps, when it was made by this very interpreter."""
    if spec.get("python") == sys.version and spec.get("code"):
        try:
            return marshal.loads(bytes.fromhex(spec["code"]))
        except Exception:
            pass
    n = len(spec["setup"]), len(spec["steps"])
    return [None] * n[0], [None] * n[1], [None] * n[1]


def _run(spec, emit):
    solution = spec["solution"]
    emit('{"k": "start", "n": %d}' % len(spec["steps"]))
    ns = {"__name__": "solution", "__builtins__": builtins}
    setup_code, step_code, lhs_code = _compiled(spec)
    try:
        exec(compile(solution, "solution.py", "exec", dont_inherit=True), ns)
        for src, code in zip(spec["setup"], setup_code):
            exec(code or compile(src, "test_setup.py", "exec", dont_inherit=True), ns)
        tns = ns
        if spec["entry_point"]:
            if spec["entry_point"] not in ns:
                raise NameError(f"the solution does not define {spec['entry_point']!r}")
            tns = dict(ns)
            tns[spec["arg"]] = ns[spec["entry_point"]]
    except BaseException as exc:
        emit('{"k": "load", "err": %s}' % _json_str(_describe(exc, solution)))
        emit('{"k": "end"}')
        return
    emit('{"k": "loaded"}')
    for i, (step, code, lhs) in enumerate(zip(spec["steps"], step_code, lhs_code)):
        try:
            exec(code or compile(step["src"], "test.py", "exec", dont_inherit=True), tns)
            emit('{"k": "t", "i": %d, "ok": true}' % i)
        except BaseException as exc:
            body = '{"k": "t", "i": %d, "ok": false, "err": %s' % (i, _json_str(_describe(exc, solution)))
            if isinstance(exc, AssertionError) and step.get("lhs"):
                try:
                    body += ', "got": ' + _json_str(repr(eval(lhs or step["lhs"], tns))[:200])
                except BaseException:
                    pass
            emit(body + "}")
    emit('{"k": "end"}')


def warm_up(rounds=12):
    # Run in the fork-server, once: executing these code paths there (the interpreter
    # specialises bytecode on first runs) spares every forked child that work.
    steps = [{"src": "assert f(2) == 4", "lhs": "f(2)"}, {"src": "assert f(3) == 0", "lhs": "f(3)"},
             {"src": "assert g(1)", "lhs": ""}]
    specs = [
        {"solution": "import math\ndef f(x):\n    return x * x\ndef g(x):\n    return [][x]\n", "setup": ["y = 1"],
         "steps": steps, "entry_point": "", "arg": "candidate"},
        {"solution": "def f(x) return x\n", "setup": [], "steps": steps, "entry_point": "f", "arg": "candidate"},
    ]
    for _ in range(rounds):
        for spec in specs:
            _run(spec, lambda body: json.loads(body))
    linecache.cache.pop("solution.py", None)
'''


@dataclass(frozen=True)
class Step:
    """One statement the harness runs alone. `test`: it counts for the score (contains a real
    assert). `lhs`: for `assert X == Y`, the source of X, evaluated again on failure for feedback."""

    src: str
    test: bool = True
    lhs: str = ""


@dataclass(frozen=True)
class HarnessSpec:
    """Everything the harness needs besides the solution: setup statements run in the solution's
    namespace, steps run one by one, and (HumanEval) the entry point bound to `arg`."""

    setup: tuple[str, ...]
    steps: tuple[Step, ...]
    entry_point: str = ""
    arg: str = "candidate"

    # per-spec memo (a frozen dataclass's fields cannot change): uses, compiled payload
    _memo: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @functools.cached_property
    def source_payload(self) -> dict[str, Any]:
        """The spec's part of the harness payload: sources only (shared: do not modify)."""
        return {"setup": list(self.setup), "steps": [{"src": s.src, "lhs": s.lhs} for s in self.steps],
                "entry_point": self.entry_point, "arg": self.arg}  # fmt: skip

    def payload(self) -> dict[str, Any]:
        """The spec's part of the harness payload for one more program (shared: do not modify).

        From the spec's second use on, it carries the tests compiled here as well (marshalled
        code objects, tagged with the interpreter that made them): a child of the sandbox running
        the same interpreter loads them instead of compiling every test again for every program.
        A spec checked once (one sample per problem) is not worth compiling on the host; a
        different interpreter (`Sandbox(python=...)`) compiles the sources."""
        memo = self._memo
        if "compiled" in memo:
            return memo["compiled"]
        if not memo.get("used"):
            memo["used"] = True
            return self.source_payload
        compiled = dict(self.source_payload, code=_compile_tests(self.setup, self.steps), python=sys.version)
        memo["compiled"] = compiled
        return compiled

    @functools.cached_property
    def digest(self) -> str:
        """A hash of the spec, for verdict-cache keys."""
        return hashlib.sha256(json.dumps(self.source_payload).encode()).hexdigest()


def _compile_tests(setup: tuple[str, ...], steps: tuple[Step, ...]) -> str:
    """Setup statements, steps and the steps' `lhs` expressions compiled as the harness would
    (optimize=0: asserts kept even if this interpreter runs with -O), marshalled, as hex. A source
    that does not compile is left to the harness (None in its place), which reports the error."""

    def one(src: str, filename: str, mode: str = "exec") -> Any:
        try:
            return compile(src, filename, mode, dont_inherit=True, optimize=0) if src else None
        except (SyntaxError, ValueError):
            return None

    setup_code = [one(s, "test_setup.py") for s in setup]
    step_code = [one(s.src, "test.py") for s in steps]
    lhs_code = [one(s.lhs, "test.py", "eval") for s in steps]
    return marshal.dumps((setup_code, step_code, lhs_code)).hex()


def _is_real_assert(node: ast.AST) -> bool:
    """An assert that can fail (`assert True, "..."` in HumanEval's tests is not a test)."""
    return any(
        isinstance(n, ast.Assert) and not (isinstance(n.test, ast.Constant) and n.test.value)
        for n in ast.walk(node)
    )


def _step(stmt: ast.stmt, source: str | None = None) -> Step:
    """`source`: the statement's own text (then `stmt` was parsed from it alone), else it is unparsed."""
    src = source if source is not None else ast.unparse(stmt)
    lhs = ""
    if isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Compare) and len(stmt.test.ops) == 1:
        if isinstance(stmt.test.ops[0], ast.Eq):
            lhs = _segment(source, stmt.test.left) if source is not None else ast.unparse(stmt.test.left)
    return Step(src=src, test=_is_real_assert(stmt), lhs=lhs)


def mbpp_spec(test_list: tuple[str, ...] | list[str], setup_code: str = "") -> HarnessSpec:
    """One step per assert of an MBPP problem (cached: a problem is checked once per sample)."""
    return _mbpp_spec_cached(tuple(test_list), setup_code)


def _segment(source: str, node: ast.expr) -> str:
    """The source text of `node` (parsed from `source`); a fast path for one-line sources."""
    if node.lineno == node.end_lineno == 1 and node.end_col_offset is not None:
        return source.encode()[node.col_offset : node.end_col_offset].decode()  # offsets are UTF-8 bytes
    return ast.get_source_segment(source, node) or ast.unparse(node)


@functools.lru_cache(maxsize=4096)
def _mbpp_spec_cached(test_list: tuple[str, ...], setup_code: str) -> HarnessSpec:
    steps = []
    for t in test_list:
        t = t.replace("\r\n", "\n").strip()
        try:
            tree = ast.parse(t)
            stmt = tree.body[0] if len(tree.body) == 1 else None
        except SyntaxError:
            stmt = None
        steps.append(_step(stmt, t) if stmt is not None else Step(src=t))
    setup = setup_code.replace("\r\n", "\n").strip()
    return HarnessSpec(setup=(setup,) if setup else (), steps=tuple(steps))


def humaneval_spec(test: str, entry_point: str) -> HarnessSpec:
    """Split HumanEval's `def check(candidate): ...` into per-statement steps; the test file's
    other top-level statements (imports, METADATA, helpers) become setup."""
    tree = ast.parse(test)
    setup, steps, arg = [], [], "candidate"
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            if node.args.args:
                arg = node.args.args[0].arg
            steps = [_step(stmt) for stmt in node.body]
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                  and getattr(node.value.func, "id", None) == "check"):  # fmt: skip
            setup.append(ast.unparse(node))
    if not steps:
        raise ValueError("HumanEval test has no `def check(candidate)` with statements")
    return HarnessSpec(setup=tuple(setup), steps=tuple(steps), entry_point=entry_point, arg=arg)


def harness_prelude() -> dict[str, str]:
    """`Sandbox(prelude=...)` that pre-compiles the harness in every worker (saves ~0.5 ms per check)."""
    return {HARNESS_MODULE: _HARNESS + "\nwarm_up()\n"}


def harness_call(solution: str, spec: HarnessSpec, nonce: str) -> Call:
    """The harness as a sandbox `Call` (the sandbox has `harness_prelude()` loaded): the child
    neither compiles a program nor decodes the payload, which arrives as its arguments."""
    return Call(f"{HARNESS_MODULE}.run", {"spec": {"solution": solution, **spec.payload()}, "nonce": nonce})


def harness_program(solution: str, spec: HarnessSpec, nonce: str) -> str:
    """The harness as a self-contained program, for a sandbox without `harness_prelude()`."""
    payload = json.dumps({"solution": solution, **spec.source_payload})
    call = f"_h.run(_json.loads({payload!r}), {nonce!r})\n"
    return f"import json as _json, types as _types\n_h = _types.ModuleType({HARNESS_MODULE!r})\nexec({_HARNESS!r}, _h.__dict__)\n{call}"


# ----------------------------------------------------------------------------- verdicts


@dataclass
class _Report:
    started: bool = False
    loaded: bool = False
    ended: bool = False
    load_error: str = ""
    results: dict[int, dict[str, Any]] | None = None


class HarnessOutputError(ValueError):
    pass


def _parse_report(stdout: str, nonce: str, n_steps: int) -> _Report:
    rep = _Report(results={})
    prefix = nonce + " "
    for line in stdout.splitlines():
        if not line.startswith(prefix):
            continue
        try:
            msg = json.loads(line[len(prefix) :])
            kind = msg["k"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise HarnessOutputError(f"unparseable harness line {line[:200]!r}") from exc
        if kind == "start":
            if msg.get("n") != n_steps:
                raise HarnessOutputError(f"harness announced {msg.get('n')} tests, expected {n_steps}")
            rep.started = True
        elif kind == "load":
            rep.load_error = str(msg.get("err", ""))
        elif kind == "loaded":
            rep.loaded = True
        elif kind == "t":
            i = msg.get("i")
            if not isinstance(i, int) or not 0 <= i < n_steps:
                raise HarnessOutputError(f"harness reported unknown test index {i!r}")
            rep.results[i] = msg
        elif kind == "end":
            rep.ended = True
    return rep


def _trim(text: str, n: int = FEEDBACK_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n - 3] + "..."


def _step_failure(step: Step, res: dict[str, Any]) -> str:
    err = res.get("err", "failed")
    head = f"Test failed: {step.src.strip().splitlines()[0][:200]}" if step.test else f"Test setup failed: {step.src[:200]}"
    if err.startswith("AssertionError"):
        detail = err[len("AssertionError") :].strip(": ")
        text = head + (f"\n{detail}" if detail else "")
    else:
        text = f"{head}\n{err}"
    if "got" in res:
        text += f"\nGot: {res['got']}"
    return text


def verdict_from_run(spec: HarnessSpec, nonce: str, r: ExecResult, timeout_s: float) -> Verdict:
    """Turn a sandbox result of `harness_program` into a Verdict (both binary and graded)."""
    if r.sandbox_error:
        return Verdict.error(f"sandbox failed: {r.sandbox_error}")
    try:
        rep = _parse_report(r.stdout, nonce, len(spec.steps))
    except HarnessOutputError as exc:
        return Verdict.error(str(exc))
    if not rep.started:
        return Verdict.error(
            f"harness produced no output (sandbox status {r.status}, code {r.returncode}): {_trim(r.stderr, 300)}"
        )
    results = rep.results or {}
    n_tests = sum(s.test for s in spec.steps)
    failed_setup_steps = sum(1 for i, s in enumerate(spec.steps) if not s.test and not results.get(i, {"ok": True})["ok"])
    passed = sum(1 for i, s in enumerate(spec.steps) if s.test and results.get(i, {}).get("ok"))
    denominator = max(n_tests + failed_setup_steps, 1)
    score = 0.0 if rep.load_error else passed / denominator
    all_ok = rep.ended and not rep.load_error and all(results.get(i, {}).get("ok") for i in range(len(spec.steps)))
    if all_ok:
        return Verdict("pass", True, 1.0, "")
    if rep.load_error:
        return Verdict("fail", False, 0.0, _trim(f"The code failed to load: {rep.load_error}"))
    first_fail = next((i for i in range(len(spec.steps)) if i in results and not results[i]["ok"]), None)
    if r.status == "timeout":
        running = len(results)
        if not rep.loaded:
            where = " while loading the solution (its module-level code)"
        elif running < len(spec.steps):
            where = f" while running: {spec.steps[running].src.splitlines()[0][:200]}"
        else:
            where = ""
        feedback = f"Timed out after {timeout_s:g}s{where} ({passed}/{n_tests} tests passed before)."
        return Verdict("timeout", False, min(score, 1.0), _trim(feedback))
    if first_fail is not None:
        return Verdict("fail", False, score, _trim(_step_failure(spec.steps[first_fail], results[first_fail])))
    # Tests stopped without a failure being reported: the solution ended the process itself.
    why = {"memory": "ran out of memory", "killed": f"was killed (signal {-(r.returncode or 0)})"}.get(
        r.status, f"exited with code {r.returncode}"
    )
    return Verdict("fail", False, score, _trim(f"The program {why} before the tests finished. {r.stderr[-300:]}"))


# ----------------------------------------------------------------------------- domains


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DomainError(f"data file not found: {path}")
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    missing = [k for k in required if k not in row]
                    if missing:
                        raise KeyError(", ".join(missing))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise DomainError(f"{path}:{lineno}: bad row ({type(exc).__name__}: {exc})") from exc
                rows.append(row)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DomainError(f"cannot read {path}: {exc}") from exc
    return rows


def _looks_like_path(path: str) -> bool:
    return path.startswith((".", "/", "~")) or path.endswith((".jsonl", ".json", ".gz")) or Path(path).exists()


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
        elif _looks_like_path(path):
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
        self._cache: OrderedDict[str, Verdict] = OrderedDict()

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
                self._sandbox = Sandbox(self.limits, workers=self._workers, isolation=self._isolation,  # type: ignore[arg-type]
                                        prelude=harness_prelude())  # fmt: skip
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
                key = self._cache_key(p.problem_id, solution, spec)
                if key in todo:
                    todo[key].append(i)
                    continue
                cached = self._cache_get(key)
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
                        v = Verdict.error(f"verifier crashed: {type(exc).__name__}: {exc}")
                    if v.status != "error":  # infrastructure failures are worth retrying
                        self._cache_put(key, v)
                    for i in todo[key]:
                        verdicts[i] = v
        return [v if v is not None else Verdict.error("internal: no verdict") for v in verdicts]

    def _cache_key(self, problem_id: str, solution: str, spec: HarnessSpec) -> str:
        blob = json.dumps([problem_id, solution, spec.digest, _limits_key(self.limits)])
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cache_get(self, key: str) -> Verdict | None:
        with self._lock:
            v = self._cache.get(key)
            if v is not None:
                self._cache.move_to_end(key)
            return v

    def _cache_put(self, key: str, v: Verdict) -> None:
        with self._lock:
            self._cache[key] = v
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _hf_rows(self, split: str) -> list[dict[str, Any]]:
        import datasets  # only when asked for a hub dataset

        return [dict(r) for r in datasets.load_dataset(str(self._source), self.hf_config, split=split)]


_CHECK_SLICE = 32  # programs in check_many's first sandbox call; each next one doubles (to 512)


@functools.lru_cache(maxsize=64)
def _limits_key(limits: Limits) -> tuple:
    return astuple(limits)


# ----------------------------------------------------------------------------- MBPP

MBPP_SPLITS: dict[str, tuple[int, int]] = {
    "test": (11, 510),
    "prompt": (1, 10),
    "validation": (511, 600),
    "train": (601, 974),
}

_CALLED = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


def _mbpp_entry_point(tests: list[str] | tuple[str, ...]) -> str:
    """The function the tests call: the first call in the first assert that is not a builtin."""
    import builtins

    for name in _CALLED.findall(tests[0] if tests else ""):
        if not hasattr(builtins, name) and name not in ("assert",):
            return name
    return ""


class MBPPDomain(_CodeDomain):
    """MBPP (Austin et al. 2021): a task description plus three asserts; see module docstring."""

    name = "mbpp"
    stop = ("\n```",)
    default_file = "mbpp/mbpp.jsonl"
    required_fields = ("task_id", "text", "code", "test_list")

    def __init__(self, path: str | None = None, *, split_by_task_id: bool = True, **options: Any) -> None:
        super().__init__(path, **options)
        self.split_by_task_id = split_by_task_id

    def _rows(self, split: str) -> list[dict[str, Any]]:
        if split not in MBPP_SPLITS:
            raise DomainError(f"mbpp has splits {', '.join(MBPP_SPLITS)}; not {split!r}")
        if not isinstance(self._source, Path):
            return self._hf_rows(split)  # the hub dataset is already split this way
        rows = _read_jsonl(self._source, self.required_fields)
        if not self.split_by_task_id:
            return rows
        lo, hi = MBPP_SPLITS[split]
        return [r for r in rows if lo <= int(r["task_id"]) <= hi]

    def load(self, split: str, limit: int | None = None) -> list[Problem]:
        problems = []
        for row in self._rows(split)[:limit]:
            try:
                tests = tuple(row["test_list"])
                setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
                problems.append(
                    Problem(
                        problem_id=f"mbpp/{int(row['task_id'])}",
                        domain=self.name,
                        question=row.get("text") or row["prompt"],
                        solution=row["code"].replace("\r\n", "\n"),
                        tests=tests,
                        meta={
                            "task_id": int(row["task_id"]),
                            "test_setup_code": setup,
                            "challenge_test_list": list(row.get("challenge_test_list") or []),
                            "entry_point": _mbpp_entry_point(tests),
                        },
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise DomainError(f"{self._source}: bad mbpp row {row.get('task_id')!r}: {exc!r}") from exc
        return problems

    def prompt(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        tests = "\n".join(t.strip() for t in problem.tests)
        text = (
            f"You are an expert Python programmer, and here is your task: {problem.question.strip()} "
            f"Your code should pass these tests:\n\n{tests}\n\n"
        )
        if pi is not None:
            text += pi_section(pi) + "\n\n"
        return text + "```python\n"

    def solution_and_spec(self, problem: Problem, completion: str) -> tuple[str, HarnessSpec]:
        code = extract_code(completion, fence_open=True, entry_point=problem.meta.get("entry_point") or None)
        return code, mbpp_spec(problem.tests, problem.meta.get("test_setup_code", ""))


# ----------------------------------------------------------------------------- HumanEval


class HumanEvalDomain(_CodeDomain):
    """HumanEval (Chen et al. 2021): complete a function from its signature and docstring."""

    name = "humaneval"
    # The standard HumanEval stop sequences: the function ends at the next top-level statement.
    stop = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    default_file = "humaneval/HumanEval.jsonl.gz"
    required_fields = ("task_id", "prompt", "canonical_solution", "test", "entry_point")

    def __init__(self, path: str | None = None, *, train_on_test: bool = False, **options: Any) -> None:
        super().__init__(path, **options)
        self.train_on_test = train_on_test

    def _rows(self, split: str) -> list[dict[str, Any]]:
        if split == "train":
            if not self.train_on_test:
                raise DomainError(
                    "humaneval is an evaluation benchmark with only a 'test' split; train on mbpp, or build "
                    "the domain with train_on_test=True to use the test problems for training on purpose"
                )
        elif split != "test":
            raise DomainError(f"humaneval has only the split 'test' (and 'train' with train_on_test=True), not {split!r}")
        if not isinstance(self._source, Path):
            return self._hf_rows("test")
        return _read_jsonl(self._source, self.required_fields)

    def load(self, split: str, limit: int | None = None) -> list[Problem]:
        problems = []
        for row in self._rows(split)[:limit]:
            try:
                number = str(row["task_id"]).rsplit("/", 1)[-1]
                humaneval_spec(row["test"], row["entry_point"])  # fail at load, not at check time
                problems.append(
                    Problem(
                        problem_id=f"humaneval/{number}",
                        domain=self.name,
                        question=row["prompt"],
                        solution=row["canonical_solution"],
                        tests=(row["test"],),
                        meta={"task_id": row["task_id"], "entry_point": row["entry_point"]},
                    )
                )
            except (KeyError, TypeError, ValueError, SyntaxError) as exc:
                raise DomainError(f"{self._source}: bad humaneval row {row.get('task_id')!r}: {exc!r}") from exc
        return problems

    def prompt(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        if pi is None:
            return problem.question
        # The answer cue is the function's own prompt, so privileged information goes before it,
        # as comments (it may contain code or quotes that would break a docstring).
        note = "\n".join(f"# {line}".rstrip() for line in pi_section(pi).splitlines())
        return f"{note}\n\n{problem.question}"

    def solution_and_spec(self, problem: Problem, completion: str) -> tuple[str, HarnessSpec]:
        entry = problem.meta["entry_point"]
        return humaneval_solution(problem.question, completion, entry), _humaneval_spec_cached(problem.tests[0], entry)


@functools.lru_cache(maxsize=4096)
def _humaneval_spec_cached(test: str, entry_point: str) -> HarnessSpec:
    return humaneval_spec(test, entry_point)
