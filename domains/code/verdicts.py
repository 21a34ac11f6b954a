"""Verdicts: the harness's report on stdout, read back and turned into a `Verdict`.

For the spec `mbpp_spec(["assert add(1, 2) == 3", "assert add(0, 0) == 0"])` and a solution
`return a - b`, the sandbox's stdout (lines of other nonces, e.g. forged by the solution, are
ignored; the solution's own prints went to /dev/null; the grammar is read strictly, see
`_parse_report`)

    5f2c... {"k": "start", "n": 2}
    5f2c... {"k": "loaded"}
    5f2c... {"k": "t", "i": 0, "ok": false, "err": "AssertionError", "got": "-1"}
    5f2c... {"k": "t", "i": 1, "ok": true}
    5f2c... {"k": "end"}

becomes

    Verdict(status="fail", passed=False, score=0.5,
            feedback="Test failed: assert add(1, 2) == 3\nGot: -1")

Status: pass (all tests ran and passed) | fail (tests ran and some failed, including syntax
errors and exceptions in the model's code) | timeout (the sandbox timeout hit; the score
counts the tests passed before it) | error (the verifier itself failed: no or garbled harness
output, a sandbox failure).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from domains.base import Verdict
from domains.code.specs import HarnessSpec, Step
from sandbox import ExecResult

FEEDBACK_CHARS = 500


@dataclass
class _Report:
    started: bool = False
    loaded: bool = False
    ended: bool = False
    load_error: str = ""
    results: dict[int, dict[str, Any]] = field(default_factory=dict)


class HarnessOutputError(ValueError):
    """The harness's own output is not what it writes: the verifier failed (an ERROR verdict)."""


class ChannelTampered(ValueError):
    """Lines on the report channel the harness did not write: the program wrote them (its fail)."""


def _parse_report(stdout: str, nonce: str, n_steps: int) -> _Report:
    """The report, read strictly. The harness writes exactly: `start n`, then `load` (an error) and `end`,
    or `loaded`, one `t` line per step in step order, and `end`; a run cut short (timeout, exit) stops
    anywhere. Before `start` nothing of the program has run, so a bad line there is the verifier's
    (HarnessOutputError). After it, a line that breaks the grammar (unparseable, repeated, out of order, a
    field of the wrong type, anything after `end`) can only come from the program: ChannelTampered."""
    rep = _Report()
    prefix = nonce + " "
    for line in stdout.splitlines():
        if not line.startswith(prefix):
            continue
        try:
            msg = json.loads(line[len(prefix) :])
            kind = msg["k"] if isinstance(msg, dict) else None
        except (json.JSONDecodeError, KeyError) as exc:
            if rep.started:
                raise ChannelTampered(f"unparseable line {line[:120]!r}") from exc
            raise HarnessOutputError(f"unparseable harness line {line[:200]!r}") from exc
        if not rep.started:
            if kind != "start" or msg.get("n") != n_steps:
                raise HarnessOutputError(
                    f"harness began with {line[:200]!r}, expected a start line for {n_steps} tests"
                )
            rep.started = True
        else:
            _take(rep, kind, msg, n_steps)
    return rep


def _take(rep: _Report, kind: Any, msg: dict[str, Any], n_steps: int) -> None:
    """One line after `start`, in the harness's grammar, or ChannelTampered naming what broke it."""
    if rep.ended:
        raise ChannelTampered(f"a {kind!r} line after the report's end")
    if kind == "load" and not rep.loaded and not rep.load_error and isinstance(msg.get("err"), str):
        rep.load_error = msg["err"]
    elif kind == "loaded" and not rep.loaded and not rep.load_error:
        rep.loaded = True
    elif kind == "t" and rep.loaded and msg.get("i") == len(rep.results) < n_steps and _well_typed(msg):
        rep.results[msg["i"]] = msg
    elif kind == "end" and (rep.load_error or len(rep.results) == n_steps):
        rep.ended = True
    else:
        raise ChannelTampered(f"a {kind!r} line out of place (test results so far: {len(rep.results)} of {n_steps})")


def _well_typed(msg: dict[str, Any]) -> bool:
    return (
        type(msg.get("i")) is int
        and isinstance(msg.get("ok"), bool)
        and isinstance(msg.get("err", ""), str)
        and isinstance(msg.get("got", ""), str)
        and set(msg) <= {"k", "i", "ok", "err", "got"}
    )


def _trim(text: str, n: int = FEEDBACK_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n - 3] + "..."


def _step_failure(step: Step, res: dict[str, Any]) -> str:
    err = res.get("err", "failed")
    head = (
        f"Test failed: {step.src.strip().splitlines()[0][:200]}"
        if step.test
        else f"Test setup failed: {step.src[:200]}"
    )
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
    except ChannelTampered as exc:  # the program wrote on the harness's channel: its own fail, flagged
        return Verdict(
            "fail", False, 0.0, f"The program tampered with the test harness's report: {exc}", flags="channel"
        )
    if not rep.started:
        return Verdict.error(
            f"harness produced no output (sandbox status {r.status}, code {r.returncode}): {_trim(r.stderr, 300)}"
        )
    results = rep.results or {}
    n_tests = sum(s.test for s in spec.steps)
    failed_setup_steps = sum(
        1 for i, s in enumerate(spec.steps) if not s.test and not results.get(i, {"ok": True})["ok"]
    )
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
