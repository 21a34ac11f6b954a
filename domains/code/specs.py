"""Test specs: a problem's tests split into what the candidate's process computes (probes) and
what trusted code judges, and the sandbox programs (`Call`s, or self-contained source) for both.

An MBPP assert `assert L == R` becomes a probe (the expression L, evaluated in the solution's
namespace by the sandboxed harness, which returns its value as plain data) and a judgement the
host evaluates on that value (`==` against R, read as a literal or computed from the reference
solution). The candidate's process never sees R:

    >>> s = draft_mbpp(("assert add(1, 2) == 3",), entry_point="add").spec()
    >>> s.exprs, s.tests[0].judge
    (('add(1, 2)',), ('cmp', 'Eq', ('probe', 0), ('const', 3)))

Other assert forms are split the same way (`assert not f(x)`, `assert f(x) and g(y)`,
`assert math.isclose(f(x), 1.5, rel_tol=0.01)`, any single comparison). HumanEval's
`check(candidate)` keeps its statements as steps, replayed by the harness's `judge` against the
candidate's recorded outputs (`CheckSpec`). Extra (hidden) tests are calls of the entry point
with mutated inputs (`domains.code.mutate`), their expected outputs computed by the reference
solution (`plan`). The harness is `harness.py` in this folder, shipped as text with `plain.py`.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import marshal
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from domains.code import plain
from domains.code.mutate import mutate_inputs
from sandbox import Call

HARNESS_MODULE = "pidistill_harness"  # module names in the sandbox
PLAIN_MODULE = "pidistill_plain"
# Read as text, never imported here as these modules: they run in the sandbox, in a Python of their own.
HARNESS_SOURCE = (Path(__file__).parent / "harness.py").read_text(encoding="utf-8")
PLAIN_SOURCE = (Path(__file__).parent / "plain.py").read_text(encoding="utf-8")

HIDDEN_REL_TOL = 1e-6  # hidden tests' float outputs: the reference's arithmetic need not be the only right one
HIDDEN_ABS_TOL = 1e-9

Judgement = tuple[Any, ...]  # a tree over probe values, evaluated by verdicts.judge_value


class SpecError(ValueError):
    """A problem's tests cannot be judged by the trusted verifier (names the test and why)."""


@dataclass(frozen=True)
class Test:
    """One test as the host judges it. `src`: what feedback names (the assert; hidden tests are not
    shown). `counts`: it is a test, not a setup statement (HumanEval's `import math` step)."""

    src: str
    judge: Judgement = ()
    counts: bool = True
    hidden: bool = False


@dataclass(frozen=True)
class CheckSpec:
    """HumanEval's `check(candidate)`: its statements, replayed by the judge. `named`: the reference's
    answers to calls of the function by its own name (HumanEval/33), recorded by `plan`."""

    prompt: str
    setup: tuple[str, ...]
    steps: tuple[Test, ...]
    entry_point: str
    arg: str
    seed: str
    named: tuple[tuple[str, str], ...] = ()

    def payload(self, outputs: dict[str, list[str]]) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "setup": list(self.setup),
            "steps": [s.src for s in self.steps],
            "entry_point": self.entry_point,
            "arg": self.arg,
            "seed": self.seed,
            "named": dict(self.named),
            "outputs": outputs,
        }


@dataclass(frozen=True)
class HarnessSpec:
    """What a candidate's program computes and how its outputs are judged.

    setup: statements run in the solution's namespace after it loads (MBPP's test_setup_code).
    exprs: probe expressions evaluated there; calls: probes that call `entry_point` with
    plain-encoded `(args, kwargs)`. tests: judged on the host over the probe values (MBPP, and
    hidden tests). check: HumanEval's replayed `check` (its probes are the first calls)."""

    setup: tuple[str, ...] = ()
    exprs: tuple[str, ...] = ()
    calls: tuple[str, ...] = ()
    tests: tuple[Test, ...] = ()
    entry_point: str = ""
    bind: tuple[tuple[str, str], ...] = ()  # (alias, name): HumanEval's expressions call `candidate`
    check: CheckSpec | None = None

    # per-spec memo (a frozen dataclass's fields cannot change): uses, compiled payload
    _memo: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def n_probes(self) -> int:
        return len(self.exprs) + len(self.calls)

    @functools.cached_property
    def source_payload(self) -> dict[str, Any]:
        """The spec's part of the candidate's payload: sources only (shared: do not modify)."""
        return {
            "setup": list(self.setup),
            "exprs": list(self.exprs),
            "calls": list(self.calls),
            "entry_point": self.entry_point,
            "bind": dict(self.bind),
        }

    def payload(self) -> dict[str, Any]:
        """The spec's part of the payload for one more program (shared: do not modify).

        From the spec's second use on, it carries the setup and expressions compiled here as well
        (marshalled code objects, tagged with the interpreter that made them): a child of the
        sandbox running the same interpreter loads them instead of compiling them again for every
        program. A spec checked once is not worth compiling on the host; a different interpreter
        (`Sandbox(python=...)`) compiles the sources."""
        memo = self._memo
        if "compiled" in memo:
            return memo["compiled"]
        if not memo.get("used"):
            memo["used"] = True
            return self.source_payload
        compiled = dict(self.source_payload, code=_compile_probes(self.setup, self.exprs), python=sys.version)
        memo["compiled"] = compiled
        return compiled

    @functools.cached_property
    def digest(self) -> str:
        """A hash of everything that decides a verdict, for verdict-cache keys."""
        blob = repr((self.source_payload, self.tests, self.check))
        return hashlib.sha256(blob.encode()).hexdigest()


def _compile_probes(setup: tuple[str, ...], exprs: tuple[str, ...]) -> str:
    """Setup statements and probe expressions compiled as the harness would, marshalled, as hex. A
    source that does not compile is left to the harness (None in its place), which reports it."""

    def one(src: str, filename: str, mode: str) -> Any:
        try:
            return compile(src, filename, mode, dont_inherit=True, optimize=0)
        except (SyntaxError, ValueError):
            return None

    return marshal.dumps(
        ([one(s, "test_setup.py", "exec") for s in setup], [one(e, "test.py", "eval") for e in exprs])
    ).hex()


# ----------------------------------------------------------------------------- MBPP-style asserts


@dataclass
class Draft:
    """A spec before the reference solution has run: `refs` are right-hand sides only the reference
    can evaluate (tests hold `("ref", j)` for them) and `extra` candidate hidden tests (`Extra`), of
    which the first `want` the reference answers are kept. `spec()` when nothing needs planning."""

    setup: tuple[str, ...]
    exprs: list[str]
    tests: list[Test]
    entry_point: str
    refs: list[str] = field(default_factory=list)
    extra: Extra | None = None
    want: int = 0

    @property
    def needs_plan(self) -> bool:
        return bool(self.refs or (self.extra and self.want))

    def plan_payload(self, reference: str) -> dict[str, Any]:
        return {
            "solution": reference,
            "setup": list(self.setup),
            "exprs": list(self.refs),
            "extra": list(self.extra.exprs) if self.extra and self.want else [],
            "want": self.want,
            "bind": {},
        }

    def spec(self, plan: dict[str, Any] | None = None) -> HarnessSpec:
        """The final spec, with the reference's answers (`plan`, from harness.plan) filled in."""
        tests, exprs = list(self.tests), list(self.exprs)
        if self.needs_plan:
            if plan is None:
                raise SpecError("this problem's expected values come from its reference solution: plan it first")
            consts = [_ref_value(self.refs[j], r) for j, r in enumerate(plan.get("exprs", []))]
            if len(consts) != len(self.refs):
                raise SpecError(f"the reference answered {len(consts)} of {len(self.refs)} expressions")
            tests = [replace(t, judge=_fill(t.judge, consts)) for t in tests]
            kept = _kept(self.extra, plan, self.want, len(self.exprs))
            tests += [t for _, t in kept]
            exprs += [e for e, _ in kept]
        return HarnessSpec(setup=self.setup, exprs=tuple(exprs), tests=tuple(tests), entry_point=self.entry_point)


def _ref_value(src: str, answer: list[Any]) -> Any:
    if answer[0] != "v":
        raise SpecError(f"the reference solution cannot compute {src!r}: {answer[1]}")
    return plain.loads(answer[1])


def _fill(node: Any, consts: list[Any]) -> Any:
    if isinstance(node, tuple) and node and node[0] == "ref":
        return ("const", consts[node[1]])
    if isinstance(node, tuple):
        return tuple(_fill(n, consts) for n in node)
    if isinstance(node, list):
        return [_fill(n, consts) for n in node]
    return node


_CMP_OPS = {
    ast.Eq: "Eq",
    ast.NotEq: "NotEq",
    ast.Lt: "Lt",
    ast.LtE: "LtE",
    ast.Gt: "Gt",
    ast.GtE: "GtE",
    ast.In: "In",
    ast.NotIn: "NotIn",
    ast.Is: "Is",
    ast.IsNot: "IsNot",
}


class _Splitter:
    """Splits assert expressions into probes (run in the candidate's process) and a judgement tree.
    A probe is an expression that calls into the solution; everything around it (comparisons,
    `not`, `and`/`or`, `math.isclose`) is judged on the host, where no candidate code runs."""

    def __init__(self, solution_names: frozenset[str]):
        self.names = solution_names  # what belongs to the solution: its entry point, its definitions
        self.exprs: list[str] = []
        self.refs: list[str] = []

    def probe(self, node: ast.expr, source: str) -> Judgement:
        self.exprs.append(_segment(source, node))
        return ("probe", len(self.exprs) - 1)

    def expected(self, node: ast.expr, source: str) -> Judgement:
        """A side that states what is expected: a literal, else computed by the reference."""
        try:
            return ("const", ast.literal_eval(node))
        except _NOT_LITERAL:
            self.refs.append(_segment(source, node))
            return ("ref", len(self.refs) - 1)

    def mentions(self, node: ast.AST) -> bool:
        return any(isinstance(n, ast.Name) and n.id in self.names for n in ast.walk(node))

    def judge(self, node: ast.expr, source: str) -> Judgement:
        if isinstance(node, ast.BoolOp):
            return ("and" if isinstance(node.op, ast.And) else "or", tuple(self.judge(v, source) for v in node.values))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ("not", self.judge(node.operand, source))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP_OPS:
            left, right = node.left, node.comparators[0]
            op = _CMP_OPS[type(node.ops[0])]
            if self.mentions(right) and not self.mentions(left):  # `assert 3 == f(x)`
                return ("cmp", op, self.expected(left, source), self.probe(right, source))
            if self.mentions(right):  # both sides call the solution: `f(a) == f(b)`, as the dataset says
                return ("cmp", op, self.probe(left, source), self.probe(right, source))
            return ("cmp", op, self.probe(left, source), self.expected(right, source))
        if _is_isclose(node):
            assert isinstance(node, ast.Call)
            kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
            a, b = node.args
            if self.mentions(b) and not self.mentions(a):
                a, b = b, a
            return ("isclose", self.probe(a, source), self.expected(b, source), tuple(sorted(kw.items())))
        return ("truth", self.probe(node, source))


def _is_isclose(node: ast.expr) -> bool:
    if not (isinstance(node, ast.Call) and len(node.args) == 2):
        return False
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    if name != "isclose" or not all(k.arg in ("rel_tol", "abs_tol") for k in node.keywords):
        return False
    return all(_is_literal(k.value) for k in node.keywords)


def _segment(source: str, node: ast.expr) -> str:
    """The source text of `node` (parsed from `source`); a fast path for one-line sources."""
    if node.lineno == node.end_lineno == 1 and node.end_col_offset is not None:
        return source.encode()[node.col_offset : node.end_col_offset].decode()  # offsets are UTF-8 bytes
    return ast.get_source_segment(source, node) or ast.unparse(node)


def solution_names(reference: str, entry_point: str) -> frozenset[str]:
    """Names a test reaches the solution through: the entry point and the reference's top-level
    definitions (mbpp/126's own `sum`, mbpp/601's `Pair`)."""
    names = {entry_point} if entry_point else set()
    try:
        tree = ast.parse(reference)
    except (SyntaxError, ValueError):
        return frozenset(names)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return frozenset(names)


def draft_mbpp(
    tests: tuple[str, ...],
    setup_code: str = "",
    *,
    entry_point: str = "",
    reference: str = "",
    hidden: tuple[str, ...] = (),
    extra: int = 0,
    seed: str = "",
) -> Draft:
    """The draft spec of MBPP-style asserts (`tests` shown to the model, `hidden` not: MBPP's
    challenge tests) and `extra` hidden tests mutated from the shown ones (`extra_tests`)."""
    names = solution_names(reference, entry_point)
    splitter = _Splitter(names)
    out = []
    for t, is_hidden in [(t, False) for t in tests] + [(t, True) for t in hidden]:
        src = t.replace("\r\n", "\n").strip()
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError) as exc:
            raise SpecError(f"test {src[:200]!r} is not Python: {exc}") from exc
        if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
            raise SpecError(f"test {src[:200]!r} is not one assert statement: the trusted verifier judges asserts")
        out.append(Test(src=src, judge=splitter.judge(tree.body[0].test, src), hidden=is_hidden))
    setup = setup_code.replace("\r\n", "\n").strip()
    return Draft(
        setup=(setup,) if setup else (),
        exprs=splitter.exprs,
        tests=out,
        entry_point=entry_point,
        refs=splitter.refs,
        extra=extra_tests(list(tests), names, extra, seed or entry_point),
        want=extra,
    )


@dataclass(frozen=True)
class Extra:
    """Candidate hidden tests: the shown tests' own expression (`set(f(x))`, `f(x)`, ...) with the
    entry point's arguments mutated (`mutate`), and how a result is judged against the reference's:
    ("close",) within HIDDEN_REL_TOL, or ("isclose", kw) with the shown test's own tolerances."""

    exprs: tuple[str, ...]
    kind: tuple[Any, ...] = ("close",)


def _kept(extra: Extra | None, plan: dict[str, Any], want: int, first_probe: int) -> list[tuple[str, Test]]:
    """The first `want` extra expressions the reference answered (plainly, the same twice), as
    (expression, hidden test judged on probe `first_probe + k`)."""
    if extra is None or not want:
        return []
    answers = plan.get("extra") or []
    out: list[tuple[str, Test]] = []
    for expr, value in zip(extra.exprs, answers):
        if value is None or len(out) == want:
            continue
        probe, const = ("probe", first_probe + len(out)), ("const", plain.loads(value))
        judge = ("isclose", probe, const, extra.kind[1]) if extra.kind[0] == "isclose" else ("close", probe, const)
        out.append((expr, Test(src=f"hidden test {len(out) + 1}", judge=judge, hidden=True)))
    return out


_ARG = "_PIDISTILL_ARG_{}_"


def extra_tests(sources: list[str], names: frozenset[str], n: int, seed: str) -> Extra | None:
    """Up to 4n candidate hidden tests for a problem whose tests are `sources` (asserts), mutated from
    the tests that compare an expression calling the solution (`names`) once, with literal arguments,
    against a literal: `assert f(1, [2]) == 3`, `assert set(f("ab")) == {"a"}`, `assert
    math.isclose(f(2.0), 4.0, rel_tol=1e-3)`. The first such test's expression is the template; the
    arguments of every test with the same template seed the mutation. Seeded by `seed` (the problem
    id): the same problem gets the same hidden tests in every process."""
    if n <= 0:
        return None
    shapes = [s for s in (_shape(src, names) for src in sources) if s is not None]
    if not shapes:
        return None
    template, kind = shapes[0][0], shapes[0][2]
    seeds = [args for t, args, k in shapes if t == template and k == kind]
    exprs = []
    for args in mutate_inputs(seeds, n, seed):
        exprs.append(_render(template, args))
    return Extra(exprs=tuple(e for e in exprs if e), kind=kind)


def _shape(src: str, names: frozenset[str]) -> tuple[str, tuple[Any, ...], tuple[Any, ...]] | None:
    """(template, arguments, judgement kind) of one test, or None when it is not of a mutable form."""
    try:
        tree = ast.parse(src.replace("\r\n", "\n").strip())
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    test = tree.body[0].test
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
        sides = [test.left, test.comparators[0]]
        kind: tuple[Any, ...] = ("close",)
    elif _is_isclose(test):
        assert isinstance(test, ast.Call)
        sides = list(test.args)
        kind = ("isclose", tuple(sorted((k.arg, ast.literal_eval(k.value)) for k in test.keywords if k.arg)))
    else:
        return None
    mentioning = [x for x in sides if any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(x))]
    if len(mentioning) != 1 or not _is_literal(sides[1 - sides.index(mentioning[0])]):
        return None
    probe = mentioning[0]
    calls = [
        c for c in ast.walk(probe) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id in names
    ]
    if len(calls) != 1 or calls[0].keywords or not calls[0].args or not all(_is_literal(a) for a in calls[0].args):
        return None
    call = calls[0]
    args = tuple(ast.literal_eval(a) for a in call.args)
    call.args = [ast.Name(id=_ARG.format(i)) for i in range(len(args))]
    return ast.unparse(probe), args, kind


# What ast.literal_eval raises for an expression that is not a literal (or one too deep to read).
_NOT_LITERAL = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except _NOT_LITERAL:
        return False
    return True


def _render(template: str, args: tuple[Any, ...]) -> str:
    out = template
    for i, a in enumerate(args):
        out = out.replace(_ARG.format(i), repr(a))
    return out


# ----------------------------------------------------------------------------- HumanEval


def _is_real_assert(node: ast.AST) -> bool:
    """An assert that can fail (`assert True, "..."` in HumanEval's tests is not a test)."""
    return any(
        isinstance(n, ast.Assert) and not (isinstance(n.test, ast.Constant) and n.test.value) for n in ast.walk(node)
    )


def humaneval_check(prompt: str, test: str, entry_point: str, seed: str) -> CheckSpec:
    """HumanEval's test file as a `CheckSpec`: one step per statement of `check(candidate)`; the
    file's other top-level statements (imports, METADATA, helpers) are setup."""
    tree = ast.parse(test)
    setup, steps, arg = [], [], "candidate"
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            if node.args.args:
                arg = node.args.args[0].arg
            steps = [Test(src=ast.unparse(stmt), counts=_is_real_assert(stmt)) for stmt in node.body]
        elif not (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", None) == "check"
        ):
            setup.append(ast.unparse(node))
    if not steps:
        raise SpecError("HumanEval test has no `def check(candidate)` with statements")
    return CheckSpec(prompt=prompt, setup=tuple(setup), steps=tuple(steps), entry_point=entry_point, arg=arg, seed=seed)


def humaneval_plan_payload(check: CheckSpec, reference: str, extra: Extra | None, want: int) -> dict[str, Any]:
    return {
        "solution": reference,
        "setup": list(check.setup),
        "exprs": [],
        "extra": list(extra.exprs) if extra else [],
        "want": want,
        "bind": {check.arg: check.entry_point},  # the hidden tests' expressions say `candidate(...)`
        "check": {
            "steps": [s.src for s in check.steps],
            "entry_point": check.entry_point,
            "arg": check.arg,
            "seed": check.seed,
        },
    }


def humaneval_spec(check: CheckSpec, plan: dict[str, Any], extra: Extra | None, want: int) -> HarnessSpec:
    """The candidate's spec from the reference's run of `check`: the kept hidden tests' expressions,
    then every input `check` gave the reference (in order, once each) as calls for the judge."""
    recorded = plan.get("steps")
    if not isinstance(recorded, dict) or len(recorded.get("steps", [])) != len(check.steps):
        raise SpecError(f"the reference's run of check() did not complete: {plan.get('error', plan)!s:.300}")
    broken = [(i, s.get("err")) for i, s in enumerate(recorded["steps"]) if not s["ok"]]
    if broken:
        i, err = broken[0]
        raise SpecError(f"the reference solution fails step {i} of check(): {check.steps[i].src[:200]!r}: {err}")
    calls = list(dict.fromkeys(k for s in recorded["steps"] for k in s["calls"]))
    kept = _kept(extra, plan, want, 0)
    named = tuple(sorted(recorded.get("named", {}).items()))
    return HarnessSpec(
        exprs=tuple(e for e, _ in kept),
        calls=tuple(calls),
        tests=tuple(t for _, t in kept),
        entry_point=check.entry_point,
        bind=((check.arg, check.entry_point),),
        check=replace(check, named=named),
    )


# ----------------------------------------------------------------------------- sandbox programs


@functools.cache
def harness_prelude() -> dict[str, str]:
    """`Sandbox(prelude=...)` that loads plain.py and the harness in every worker (compiled once)."""
    return {PLAIN_MODULE: PLAIN_SOURCE, HARNESS_MODULE: HARNESS_SOURCE + "\nwarm_up()\n"}


def harness_call(function: str, payload: dict[str, Any]) -> Call:
    """A harness entry point (`run`, `plan`, `judge`) as a sandbox `Call` (the sandbox has
    `harness_prelude()` loaded): the child neither compiles a program nor decodes its data."""
    return Call(f"{HARNESS_MODULE}.{function}", {"spec": payload})


def harness_program(function: str, payload: dict[str, Any]) -> str:
    """The same as a self-contained program, for a sandbox without `harness_prelude()`."""
    return (
        "import sys as _sys, types as _types, json as _json\n"
        f"for _name, _src in (({PLAIN_MODULE!r}, {PLAIN_SOURCE!r}), ({HARNESS_MODULE!r}, {HARNESS_SOURCE!r})):\n"
        "    _m = _types.ModuleType(_name)\n"
        "    _sys.modules[_name] = _m\n"
        "    exec(compile(_src, '<prelude ' + _name + '>', 'exec'), _m.__dict__)\n"
        f"_sys.modules[{HARNESS_MODULE!r}].{function}(_json.loads({json.dumps(payload)!r}))\n"
    )
