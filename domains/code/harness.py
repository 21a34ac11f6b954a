"""The test harness: runs INSIDE the sandbox, one solution and its tests per call.

This file is never imported by the host for its functions: `domains.code.specs` reads its
source text and ships it to the sandbox, as a prelude module (`harness_prelude()`, compiled
once per worker, then `warm_up()`) or embedded in each program (`harness_program`). So it
imports nothing but the standard library, and nothing from this package.

The solution gets its own namespace (not __main__, so its `if __name__ == "__main__":` demo
code does not run) and its stdout is sent to /dev/null; results go to a duplicate of the
original stdout, one nonce-tagged JSON line each, and are emitted as each test finishes so
that a timeout still tells which tests passed.

A spec (built on the host by `HarnessSpec.payload`, plus the solution):

    {"solution": "def add(a, b):\\n    return a - b\\n", "setup": [],
     "steps": [{"src": "assert add(1, 2) == 3", "lhs": "add(1, 2)"}],
     "entry_point": "", "arg": "candidate"}

and what `run(spec, "5f2c...")` writes for it (parsed by `domains.code.verdicts`):

    5f2c... {"k": "start", "n": 1}
    5f2c... {"k": "loaded"}
    5f2c... {"k": "t", "i": 0, "ok": false, "err": "AssertionError", "got": "-1"}
    5f2c... {"k": "end"}

(`"k": "load"` with `"err"` instead of `"loaded"` when the solution or setup fails to run.)
A spec may also carry `code` (the steps compiled by the host, marshalled, as hex) and
`python` (the `sys.version` that compiled them): used only by that very interpreter.
"""

import builtins
import json
import linecache
import marshal
import os
import sys

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
            data = data[os.write(out, data) :]

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
    steps = [
        {"src": "assert f(2) == 4", "lhs": "f(2)"},
        {"src": "assert f(3) == 0", "lhs": "f(3)"},
        {"src": "assert g(1)", "lhs": ""},
    ]
    specs = [
        {
            "solution": "import math\ndef f(x):\n    return x * x\ndef g(x):\n    return [][x]\n",
            "setup": ["y = 1"],
            "steps": steps,
            "entry_point": "",
            "arg": "candidate",
        },
        {"solution": "def f(x) return x\n", "setup": [], "steps": steps, "entry_point": "f", "arg": "candidate"},
    ]
    for _ in range(rounds):
        for spec in specs:
            _run(spec, lambda body: json.loads(body))
    linecache.cache.pop("solution.py", None)
