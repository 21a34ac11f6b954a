"""The test harness: runs INSIDE the sandbox. Three entry points, one per kind of program:

- `run(spec)`: the CANDIDATE's program. It loads the model's solution, evaluates the tests'
  inputs against it and writes what it computed as plain data (`domains/code/plain.py`). It
  holds no expected value and no pass/fail logic: those stay on the host (MBPP) or in `judge`
  (HumanEval), so whatever the solution does to this process (patching builtins, walking frames,
  forging report lines) can at most misreport its own outputs.
- `plan(spec)`: the REFERENCE solution (trusted dataset code, no candidate code): expected
  values the host cannot read off the test text, the outputs of extra (hidden) test inputs, and,
  for HumanEval, the calls `check(candidate)` makes, recorded through a stub.
- `judge(spec)`: HumanEval's `check(candidate)` replayed with its own helper functions against a
  stub that answers with the candidate's recorded outputs (no candidate code runs there).

This file is never imported by the host: `domains.code.specs` ships its source text to the
sandbox as the prelude module `pidistill_harness` (with `pidistill_plain` loaded before it). So
it imports nothing but the standard library and that module.

`run`'s report, one line per event, parsed strictly by `domains.code.verdicts`:

    start 3                      # the number of probes (expressions, then calls)
    loaded                       # or: load "SyntaxError: ..." and then end
    v 0 [1,2]                    # probe 0 returned [1, 2] (plain JSON, see plain.py)
    e 1 "IndexError: list index out of range (solution.py line 2: return xs[9])"
    x 2 "returned a S (a subclass of str): only plain data ..."
    end

`plan` and `judge` print one JSON document (`plan {...}` / `judge {...}`): their code is trusted.
"""

import builtins
import json
import linecache
import marshal
import os
import random
import signal
import sys

import pidistill_plain as plain

_json_str = json.encoder.encode_basestring_ascii  # messages are formatted by hand: a first
# json.dumps in a freshly forked child touches ~40 pages (each a copy-on-write fault)


# ----------------------------------------------------------------------------- output channel


def _channel(body):
    """Run `body(emit)` with this process's prints sent to /dev/null and `emit` writing lines to
    the original stdout (the report channel). Stdout stays on /dev/null after it (what the program
    printed is still in its buffer, flushed at exit), and the channel is closed: a line written
    later (atexit, a thread) would come after `end` anyway."""
    out = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)

    def emit(line):
        data = (line + "\n").encode()
        while data:
            data = data[os.write(out, data) :]

    try:
        body(emit)
    finally:
        os.close(out)


def _describe(exc, solution):
    """An exception as feedback: type, message, and the solution's line it came from."""
    try:
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
    except BaseException:  # the exception's own __str__ failed: its type is all we say
        return type(exc).__name__


def _compiled(spec):
    """The host's compilation of setup and expressions, when made by this very interpreter."""
    if spec.get("python") == sys.version and spec.get("code"):
        try:
            return marshal.loads(bytes.fromhex(spec["code"]))
        except Exception:
            pass
    return [None] * len(spec["setup"]), [None] * len(spec["exprs"])


def _load(solution, spec, setup_code):
    """The solution's namespace (not __main__: its `if __name__ == "__main__":` demo does not run)."""
    ns = {"__name__": "solution", "__builtins__": builtins}
    exec(compile(solution, "solution.py", "exec", dont_inherit=True), ns)
    for src, code in zip(spec["setup"], setup_code):
        exec(code or compile(src, "test_setup.py", "exec", dont_inherit=True), ns)
    for alias, name in spec.get("bind", {}).items():  # HumanEval's test expressions call `candidate`
        ns[alias] = _entry(ns, name)
    return ns


def _entry(ns, name):
    fn = ns.get(name)
    if fn is None:
        raise NameError(f"the solution does not define {name!r}")
    return fn


# ----------------------------------------------------------------------------- the candidate


def run(spec):
    _channel(lambda emit: _run(spec, emit))


def _run(spec, emit):
    solution, exprs, calls = spec["solution"], spec["exprs"], spec["calls"]
    emit("start %d" % (len(exprs) + len(calls)))
    setup_code, expr_code = _compiled(spec)
    try:
        ns = _load(solution, spec, setup_code)
        fn = _entry(ns, spec["entry_point"]) if calls else None
    except BaseException as exc:
        emit("load " + _json_str(_describe(exc, solution)))
        emit("end")
        return
    emit("loaded")
    i = 0
    for src, code in zip(exprs, expr_code):
        _probe(i, emit, solution, _evaluator(code or src, ns))
        i += 1
    for args in calls:
        _probe(i, emit, solution, _caller(fn, args))
        i += 1
    emit("end")


def _evaluator(code, ns):
    def evaluate():  # compiled inside: an expression that does not compile is that input's error
        return eval(compile(code, "test.py", "eval", dont_inherit=True) if isinstance(code, str) else code, ns)

    return evaluate


def _caller(fn, args):
    def call():
        a, kw = plain.loads(args)  # decoded per call: a solution that mutates its input spoils nothing
        return fn(*a, **kw)

    return call


def _probe(i, emit, solution, thunk):
    """One input's outcome: its value as plain JSON, the exception it raised, or why it is not plain."""
    try:
        value = thunk()
    except BaseException as exc:
        emit("e %d %s" % (i, _json_str(_describe(exc, solution))))
        return
    try:
        body = plain.dumps(value)
    except BaseException as exc:  # PlainError, or whatever a hostile object raises on the way
        msg = str(exc) if isinstance(exc, plain.PlainError) else f"its value could not be read ({type(exc).__name__})"
        emit("x %d %s" % (i, _json_str(msg[:300])))
        return
    emit("v %d %s" % (i, body))


# ----------------------------------------------------------------------------- the reference


_EXTRA_LIMIT_S = 0.2  # an extra input the reference needs longer for is no fair test of a candidate


class _Slow(BaseException):
    """An extra input the reference takes too long on (not an Exception: `except Exception` in the
    reference must not swallow it)."""


def _limited(thunk, seconds):
    def alarm(signum, frame):
        raise _Slow()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return thunk()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def plan(spec):
    _channel(lambda emit: emit("plan " + json.dumps(_plan(spec))))


def _plan(spec):
    """Expected values from the reference solution. Errors are reported, not raised: the host says
    which problem's reference does not run."""
    solution = spec["solution"]
    try:
        ns = _load(solution, spec, [None] * len(spec["setup"]))
    except BaseException as exc:
        return {"error": "the reference solution does not load: " + _describe(exc, solution)}
    exprs = []
    for src in spec["exprs"]:  # right-hand sides the host cannot read as literals (mbpp/596's sys.getsizeof)
        try:
            exprs.append(["v", plain.dumps(_evaluator(src, ns)())])
        except BaseException as exc:
            exprs.append(["e", _describe(exc, solution)])
    result = {"exprs": exprs}
    extra, kept = [], 0
    for src in spec["extra"]:  # hidden tests: kept when the reference answers plainly, twice the same
        if kept == spec["want"]:
            break
        try:
            run = _evaluator(src, ns)
            first = plain.dumps(_limited(run, _EXTRA_LIMIT_S))
            again = plain.dumps(_limited(run, _EXTRA_LIMIT_S))
            extra.append(first if first == again else None)
        except BaseException:
            extra.append(None)
        kept += extra[-1] is not None
    result["extra"] = extra
    if spec.get("check"):
        result["steps"] = _record_check(spec["check"], ns)
    return result


def _record_check(check, ns):
    """Run `check(candidate)` step by step with the reference behind a recording stub: the inputs
    each step gives the candidate, and (HumanEval/33 calls the function by its own name too) what
    the reference answers when called by name."""
    fn = ns[check["entry_point"]]
    steps, named, current = [], {}, []

    def as_candidate(*args, **kwargs):
        current.append(plain.dumps((args, kwargs)))  # before the call: the reference may mutate them
        return fn(*args, **kwargs)

    def by_name(*args, **kwargs):
        key = plain.dumps((args, kwargs))
        value = fn(*args, **kwargs)
        named[key] = plain.dumps(value)
        return value

    tns = dict(ns)  # the reference's own recursion goes to its real function (its globals are `ns`)
    tns[check["entry_point"]] = by_name
    tns[check["arg"]] = as_candidate
    for i, src in enumerate(check["steps"]):
        current = []
        random.seed(f"{check['seed']}:{i}")
        try:
            exec(compile(src, "test.py", "exec", dont_inherit=True), tns)
            steps.append({"ok": True, "calls": current})
        except BaseException as exc:
            steps.append({"ok": False, "err": _describe(exc, ""), "calls": current})
    return {"steps": steps, "named": named}


# ----------------------------------------------------------------------------- HumanEval's judge


class _Missing(BaseException):
    """The test called the candidate with an input it was not run on (the inputs depended on its
    outputs). Not an Exception: `check`'s own `except Exception` must not swallow it."""


def judge(spec):
    _channel(lambda emit: emit("judge " + json.dumps(_judge(spec))))


def _judge(spec):
    """Replay `check(candidate)` in the dataset's own namespace (the prompt's helpers, the test
    file's imports), the candidate replaced by its recorded outputs. Per step: [ok, error, got]."""
    ns = {"__name__": "judge", "__builtins__": builtins}
    try:
        exec(compile(spec["prompt"], "prompt.py", "exec", dont_inherit=True), ns)
        for src in spec["setup"]:
            exec(compile(src, "test_setup.py", "exec", dont_inherit=True), ns)
    except BaseException as exc:
        return {"error": "the problem's prompt or test setup does not run: " + _describe(exc, "")}
    outputs, named, last = spec["outputs"], spec["named"], []

    def candidate(*args, **kwargs):
        key = plain.dumps((args, kwargs))
        rec = outputs.get(key)
        if rec is None:
            raise _Missing()
        last.append(rec)
        if rec[0] == "v":
            return plain.loads(rec[1])  # decoded per call: the test may mutate what it gets
        raise _candidate_error(rec[1])

    def by_name(*args, **kwargs):  # the reference's answer, recorded by `plan`
        key = plain.dumps((args, kwargs))
        if key not in named:
            return candidate(*args, **kwargs)
        return plain.loads(named[key])

    ns[spec["entry_point"]] = by_name
    ns[spec["arg"]] = candidate
    steps = []
    for i, src in enumerate(spec["steps"]):
        del last[:]
        random.seed(f"{spec['seed']}:{i}")
        try:
            exec(compile(src, "test.py", "exec", dont_inherit=True), ns)
            steps.append([True, "", ""])
        except _Missing:
            steps.append([False, "the test called the solution with inputs that depend on its earlier outputs", ""])
        except BaseException as exc:
            got = last[-1] if last else None
            err = got[1] if got is not None and got[0] == "e" else _describe(exc, "")
            shown = plain.safe_repr(plain.loads(got[1])) if got is not None and got[0] == "v" else ""
            steps.append([False, err, shown])
    return {"steps": steps}


def _candidate_error(err):
    """The candidate's recorded exception, raised again as its builtin type when it has one (a test
    may expect a ValueError), else as a RuntimeError carrying the message."""
    name = err.split(":", 1)[0]
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(err)
        except Exception:
            pass
    return RuntimeError(err)


# ----------------------------------------------------------------------------- warm-up


def warm_up(rounds=12):
    # Run in the fork-server, once: executing these code paths there (the interpreter
    # specialises bytecode on first runs) spares every forked child that work.
    specs = [
        {
            "solution": "import math\ndef f(x):\n    return [x * x, (x, 'a'), {x: 1.5}]\ndef g(x):\n    return [][x]\n",
            "setup": ["y = 1"],
            "exprs": ["f(2)", "g(3)", "candidate(y)[0]"],
            "calls": [plain.dumps(((2,), {}))],
            "entry_point": "f",
            "bind": {"candidate": "f"},
        },
        {
            "solution": "def f(x) return x\n",
            "setup": [],
            "exprs": ["f(1)"],
            "calls": [],
            "entry_point": "f",
            "bind": {},
        },
    ]
    for _ in range(rounds):
        for spec in specs:
            _run(spec, lambda line: line.split(" ", 2))
    linecache.cache.pop("solution.py", None)
