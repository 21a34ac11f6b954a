"""Verdicts: the candidate's report read back strictly, its outputs judged in trusted code, and the
result turned into a `Verdict`.

For the spec of `["assert add(1, 2) == 3", "assert add(0, 0) == 0"]` and a solution
`return a - b`, the sandbox's stdout (the solution's own prints went to /dev/null)

    start 2
    loaded
    v 0 -1
    v 1 0
    end

holds only what the solution computed; the host compares it (`judge_value`) with what the tests
expect and gets

    Verdict(status="fail", passed=False, score=0.5,
            feedback="Test failed: assert add(1, 2) == 3\nGot: -1")

Status: pass (every test, shown and hidden, passed) | fail (tests ran and some failed, including
syntax errors, exceptions in the model's code, outputs that are not plain data, and anything the
program did to the report channel or its sandbox) | timeout (the score counts the tests judged
before it) | error (the verifier itself failed: a sandbox that could not start the program).
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from domains.base import Verdict
from domains.code import plain
from domains.code.specs import HIDDEN_ABS_TOL, HIDDEN_REL_TOL, HarnessSpec, Test
from sandbox import ExecResult

FEEDBACK_CHARS = 500


class ChannelTampered(ValueError):
    """Lines on the report channel the harness did not write: the program wrote them (its fail)."""


class NoReport(ValueError):
    """The report does not begin as the harness begins it, before any of the program runs: the
    verifier failed (an ERROR verdict), for the program could not have written there yet."""


@dataclass
class Report:
    """What the candidate's run said: per probe ("v", value) | ("e", error) | ("x", not-plain message)."""

    started: bool = False
    loaded: bool = False
    ended: bool = False
    load_error: str = ""
    values: list[tuple[str, Any]] = field(default_factory=list)


def parse_report(stdout: str, n_probes: int) -> Report:
    """The report, read strictly: `start n`, then `load "err"` and `end`, or `loaded`, one line per
    probe in order (`v i json` | `e i "err"` | `x i "msg"`), and `end`; a run cut short stops
    anywhere. Only the harness writes before the solution loads, but the solution can reach the
    channel: any line that breaks this grammar (unparseable, repeated, out of order, a value that
    is not plain data, anything after `end`) is ChannelTampered, the program's own fail."""
    rep = Report()
    for line in stdout.splitlines():
        head, _, rest = line.partition(" ")
        if rep.ended:
            raise ChannelTampered(f"a line after the report's end: {line[:80]!r}")
        if not rep.started:
            if head != "start" or rest != str(n_probes):
                raise NoReport(f"the harness began with {line[:80]!r}, not a start line for {n_probes} inputs")
            rep.started = True
        elif head == "loaded" and not rest and not rep.loaded and not rep.load_error:
            rep.loaded = True
        elif head == "load" and not rep.loaded and not rep.load_error:
            rep.load_error = _json_text(rest, line)
        elif head in ("v", "e", "x") and rep.loaded:
            index, _, body = rest.partition(" ")
            if index != str(len(rep.values)) or len(rep.values) >= n_probes:
                raise ChannelTampered(f"a result out of order: {line[:80]!r} (results so far: {len(rep.values)})")
            rep.values.append((head, _json_text(body, line) if head != "v" else _plain(body, line)))
        elif head == "end" and not rest and (rep.load_error or len(rep.values) == n_probes):
            rep.ended = True
        else:
            raise ChannelTampered(f"a line out of place: {line[:80]!r} (results so far: {len(rep.values)})")
    return rep


def _json_text(body: str, line: str) -> str:
    try:
        text = json.loads(body)
    except ValueError as exc:
        raise ChannelTampered(f"an unreadable line: {line[:80]!r}") from exc
    if type(text) is not str:
        raise ChannelTampered(f"a message that is not text: {line[:80]!r}")
    return text


def _plain(body: str, line: str) -> Any:
    try:
        return plain.loads(body)
    except (plain.PlainError, ValueError, RecursionError) as exc:
        raise ChannelTampered(f"a value that is not plain data: {line[:80]!r}") from exc


# ----------------------------------------------------------------------------- judging on the host


class _Unjudged(Exception):
    """A probe the test needs has no value: it raised, was not plain, or never ran. `why` is feedback."""

    def __init__(self, why: str, flag: str | None = None):
        super().__init__(why)
        self.why, self.flag = why, flag


_OPS = {
    "Eq": operator.eq,
    "NotEq": operator.ne,
    "Lt": operator.lt,
    "LtE": operator.le,
    "Gt": operator.gt,
    "GtE": operator.ge,
    "In": lambda a, b: a in b,
    "NotIn": lambda a, b: a not in b,
    "Is": operator.is_,
    "IsNot": operator.is_not,
}


def judge_value(node: tuple[Any, ...], values: list[tuple[str, Any]]) -> Any:
    """A judgement tree (`specs._Splitter`) evaluated over the probes' values. Every value is built
    by `plain.decode` from builtins only, so no operator here can run the candidate's code."""
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "probe":
        if node[1] >= len(values):
            raise _Unjudged("the program stopped before computing it")
        tag, value = values[node[1]]
        if tag == "e":
            raise _Unjudged(value)
        if tag == "x":
            raise _Unjudged(f"The solution {value}", flag="non_plain")
        return value
    if kind == "cmp":
        return _OPS[node[1]](judge_value(node[2], values), judge_value(node[3], values))
    if kind == "not":
        return not judge_value(node[1], values)
    if kind == "and":
        return all(judge_value(n, values) for n in node[1])
    if kind == "or":
        return any(judge_value(n, values) for n in node[1])
    if kind == "truth":
        return bool(judge_value(node[1], values))
    if kind == "isclose":
        return math.isclose(judge_value(node[1], values), judge_value(node[2], values), **dict(node[3]))
    if kind == "close":
        got, want = judge_value(node[1], values), judge_value(node[2], values)
        return plain.same(got, want, rel_tol=HIDDEN_REL_TOL, abs_tol=HIDDEN_ABS_TOL)
    raise ValueError(f"unknown judgement node {kind!r}")


def _probes(node: Any) -> Iterator[int]:
    """The probe indices a judgement tree reads, left to right."""
    if isinstance(node, tuple) and node and node[0] == "probe":
        yield int(node[1])
        return
    for child in node if isinstance(node, tuple) else ():
        if isinstance(child, tuple):
            yield from _probes(child)


@dataclass
class Outcome:
    """One test's result: ok, and if not, the feedback text (and a flag, e.g. non_plain)."""

    ok: bool
    text: str = ""
    flag: str | None = None


def judge_test(test: Test, values: list[tuple[str, Any]]) -> Outcome:
    try:
        held = bool(judge_value(test.judge, values))
    except _Unjudged as exc:
        return Outcome(False, exc.why, exc.flag)
    except Exception as exc:  # e.g. `<` between a list and an int: Python's answer, as the assert would give
        return Outcome(False, f"{type(exc).__name__}: {exc}"[:300])
    if held:
        return Outcome(True)
    i = next(_probes(test.judge), None)
    got = plain.safe_repr(values[i][1]) if i is not None and i < len(values) and values[i][0] == "v" else ""
    return Outcome(False, f"Got: {got}" if got else "")


# ----------------------------------------------------------------------------- the verdict


def _trim(text: str, n: int = FEEDBACK_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n - 3] + "..."


def _failure_text(test: Test, outcome: Outcome) -> str:
    head = (
        f"Test failed: {test.src.strip().splitlines()[0][:200]}"
        if test.counts
        else f"Test setup failed: {test.src[:200]}"
    )
    detail = outcome.text
    if detail.startswith("AssertionError"):
        detail = detail[len("AssertionError") :].lstrip(": \n")
    return head + (f"\n{detail}" if detail else "")


def verdict(
    spec: HarnessSpec, r: ExecResult, outcomes: list[Outcome] | None, timeout_s: float, rep: Report | None = None
) -> Verdict:
    """A Verdict from the candidate's run `r` and its tests' outcomes (`judge_tests`, or the HumanEval
    judge's per-step ones followed by the hidden tests'). `rep`: the parsed report (parsed here if None)."""
    damage = r.damage
    flags = "damage" if damage else None
    if r.sandbox_error and not r.program_ran:
        return Verdict.error(f"sandbox failed: {r.sandbox_error}")
    if rep is None:
        try:
            rep = parse_report(r.stdout, spec.n_probes)
        except NoReport as exc:
            return Verdict.error(str(exc))
        except ChannelTampered as exc:
            return Verdict(
                "fail", False, 0.0, f"The program tampered with the test harness's report: {exc}", flags="channel"
            )
    if not rep.started:
        return Verdict.error(
            f"harness produced no output (sandbox status {r.status}, code {r.returncode}): {_trim(r.stderr, 300)}"
        )
    if rep.load_error:
        return Verdict("fail", False, 0.0, _trim(f"The code failed to load: {rep.load_error}"), flags=flags)
    if outcomes is None:
        outcomes = judge_tests(spec.tests, rep)
    tests = _all_tests(spec)
    counted = [o for t, o in zip(tests, outcomes) if t.counts or not o.ok]  # a failed setup statement counts
    score = sum(o.ok for t, o in zip(tests, outcomes) if t.counts) / max(len(counted), 1)
    flags = ",".join(sorted({f for f in [*(flags or "").split(","), *(o.flag for o in outcomes)] if f})) or None
    if damage:
        why = f"The program damaged its sandbox: {damage}."
        return Verdict("fail", False, min(score, 1.0), _trim(why), flags=flags)
    if rep.ended and rep.loaded and all(o.ok for o in outcomes):
        return Verdict("pass", True, 1.0, "", flags=flags)
    shown = next((i for i, (t, o) in enumerate(zip(tests, outcomes)) if not o.ok and not t.hidden), None)
    if r.status == "timeout":
        where = " while loading the solution (its module-level code)" if not rep.loaded else ""
        running = next((t for t in spec.tests if len(rep.values) in _probes(t.judge)), None)
        if rep.loaded and running is not None:
            where = (
                " while running a hidden test"
                if running.hidden
                else f" while running: {running.src.splitlines()[0][:200]}"
            )
        passed = sum(o.ok for t, o in zip(tests, outcomes) if t.counts)
        feedback = (
            f"Timed out after {timeout_s:g}s{where} ({passed}/{sum(t.counts for t in tests)} tests passed before)."
        )
        return Verdict("timeout", False, min(score, 1.0), _trim(feedback), flags=flags)
    if not rep.ended:  # the program ended its own process before its outputs were all computed
        why = {"memory": "ran out of memory", "killed": f"was killed (signal {-(r.returncode or 0)})"}.get(
            r.status, f"exited with code {r.returncode}"
        )
        return Verdict(
            "fail",
            False,
            min(score, 1.0),
            _trim(f"The program {why} before the tests finished. {r.stderr[-300:]}"),
            flags=flags,
        )
    if shown is not None:
        return Verdict("fail", False, score, _trim(_failure_text(tests[shown], outcomes[shown])), flags=flags)
    hidden = [o for t, o in zip(tests, outcomes) if t.hidden]
    failed = sum(not o.ok for o in hidden)
    # Inputs and expected values of hidden tests are not told: a retry must not learn them.
    return Verdict(
        "fail", False, score, f"The shown tests pass, but {failed} of {len(hidden)} hidden tests failed.", flags=flags
    )


def _all_tests(spec: HarnessSpec) -> list[Test]:
    return ([*spec.check.steps] if spec.check is not None else []) + list(spec.tests)


def judge_tests(tests: tuple[Test, ...], rep: Report) -> list[Outcome]:
    return [judge_test(t, rep.values) for t in tests]


def step_outcomes(judged: dict[str, Any], n_steps: int) -> list[Outcome] | str:
    """HumanEval's judge output as per-step outcomes, or the reason it is unusable."""
    steps = judged.get("steps")
    if not isinstance(steps, list) or len(steps) != n_steps:
        return str(judged.get("error") or f"the judge answered {str(judged)[:200]}")
    return [Outcome(True) if ok else Outcome(False, err + (f"\nGot: {got}" if got else "")) for ok, err, got in steps]
