"""Test specs: a problem's tests split into the steps the harness runs one by one, and the
sandbox programs (`Call`s, or self-contained source) that run a solution against them.

An MBPP test list becomes one step per assert; the left side of `assert X == Y` is kept so a
failure can show what X was:

    >>> mbpp_spec(["assert add(1, 2) == 3"])
    HarnessSpec(setup=(), steps=(Step(src='assert add(1, 2) == 3', test=True, lhs='add(1, 2)'),), entry_point='', arg='candidate')

HumanEval's `def check(candidate): ...` becomes one step per statement of `check`, its other
top-level statements (imports, METADATA, helpers) setup, and `entry_point` is bound to
`candidate`. The harness that runs a spec is `harness.py` in this folder, shipped as text.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import marshal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import Call

HARNESS_MODULE = "pidistill_harness"  # its module name in the sandbox
# Read as text, never imported here: it runs in the sandbox, in a Python of its own.
HARNESS_SOURCE = (Path(__file__).parent / "harness.py").read_text(encoding="utf-8")


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
        return {
            "setup": list(self.setup),
            "steps": [{"src": s.src, "lhs": s.lhs} for s in self.steps],
            "entry_point": self.entry_point,
            "arg": self.arg,
        }

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
        isinstance(n, ast.Assert) and not (isinstance(n.test, ast.Constant) and n.test.value) for n in ast.walk(node)
    )


def _step(stmt: ast.stmt, source: str | None = None) -> Step:
    """`source`: the statement's own text (then `stmt` was parsed from it alone), else it is unparsed."""
    src = source if source is not None else ast.unparse(stmt)
    lhs = ""
    test = stmt.test if isinstance(stmt, ast.Assert) else None
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
        lhs = _segment(source, test.left) if source is not None else ast.unparse(test.left)
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
        elif not (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", None) == "check"
        ):
            setup.append(ast.unparse(node))
    if not steps:
        raise ValueError("HumanEval test has no `def check(candidate)` with statements")
    return HarnessSpec(setup=tuple(setup), steps=tuple(steps), entry_point=entry_point, arg=arg)


@functools.lru_cache(maxsize=4096)
def _humaneval_spec_cached(test: str, entry_point: str) -> HarnessSpec:
    """`humaneval_spec`, cached: HumanEvalDomain builds it at every check, a problem once per sample."""
    return humaneval_spec(test, entry_point)


def harness_prelude() -> dict[str, str]:
    """`Sandbox(prelude=...)` that pre-compiles the harness in every worker (saves ~0.5 ms per check)."""
    return {HARNESS_MODULE: HARNESS_SOURCE + "\nwarm_up()\n"}


def harness_call(solution: str, spec: HarnessSpec, nonce: str) -> Call:
    """The harness as a sandbox `Call` (the sandbox has `harness_prelude()` loaded): the child
    neither compiles a program nor decodes the payload, which arrives as its arguments."""
    return Call(f"{HARNESS_MODULE}.run", {"spec": {"solution": solution, **spec.payload()}, "nonce": nonce})


def harness_program(solution: str, spec: HarnessSpec, nonce: str) -> str:
    """The harness as a self-contained program, for a sandbox without `harness_prelude()`."""
    payload = json.dumps({"solution": solution, **spec.source_payload})
    call = f"_h.run(_json.loads({payload!r}), {nonce!r})\n"
    return f"import json as _json, types as _types\n_h = _types.ModuleType({HARNESS_MODULE!r})\nexec({HARNESS_SOURCE!r}, _h.__dict__)\n{call}"
