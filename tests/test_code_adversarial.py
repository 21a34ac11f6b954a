"""The code verifier, tried as an adversary would: one row per way to fool it, all handled.

Every attack runs through the real path (a completion -> `check_many` -> bubblewrap sandbox ->
harness -> trusted judgement), in a batch with the reference solution, which must still pass:
an attack neither passes itself nor spoils its neighbour's verdict, and is the program's own
`fail` (or `timeout`), never a verifier `error`. The families are the issue's: outputs that lie
about equality (A), patching the harness's machinery (B), forging the report (C), reading the
expected values from the harness (D), redefining HumanEval's helpers (E), a lookup table of the
shown asserts (F), misbehaviour that used to count as a verifier error (J). Reading batch
neighbours (G), SysV shared memory (I) and the worker's fds/status pipe are sandbox-level:
tests/test_sandbox.py `test_program_cannot_reach_or_break_others`; non-root mode (H) is
`test_shared_uid_refuses_to_verify` below.
"""

from __future__ import annotations

import textwrap

import pytest

from domains import DomainError
from domains.code import HumanEvalDomain, MBPPDomain
from sandbox import bwrap_available

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap not available")


def fenced(code: str) -> str:
    return "```python\n" + textwrap.dedent(code).strip() + "\n```"


# mbpp/11: remove_Occ(s, ch) removes the first and last occurrence of ch; shown tests:
# ("hello","l") -> "heo", ("abcda","a") -> "bcd", ("PHP","P") -> "H".
ATTACKS_MBPP = {
    # A: outputs that lie about equality
    "eq_always_true": """
        class Any:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
        def remove_Occ(s, ch): return Any()
    """,
    "str_subclass_eq": """
        class S(str):
            def __eq__(self, other): return True
            __hash__ = str.__hash__
        def remove_Occ(s, ch): return S("x")
    """,
    "int_subclass": """
        class I(int):
            def __eq__(self, other): return True
            __hash__ = int.__hash__
        def remove_Occ(s, ch): return I(0)
    """,
    "reflected_eq_on_expected": """
        import builtins
        class Meta(type):
            def __instancecheck__(cls, obj): return True
        class Sneaky(str, metaclass=Meta):
            def __eq__(self, other): return True
            __hash__ = str.__hash__
        def remove_Occ(s, ch): return Sneaky("")
    """,
    # B: patching the harness's machinery
    "patch_builtins_exec": """
        import builtins
        builtins.exec = lambda *a, **k: None
        builtins.eval = lambda *a, **k: "heo"
        def remove_Occ(s, ch): return s
    """,
    "patch_os_write": """
        import os
        _write = os.write
        def write(fd, data):
            return _write(fd, data.replace(b"false", b"true"))
        os.write = write
        def remove_Occ(s, ch): return s
    """,
    "settrace_skips_failures": """
        import sys
        def tracer(frame, event, arg):
            if event == "exception":
                frame.f_locals.clear()
            return tracer
        sys.settrace(tracer)
        def remove_Occ(s, ch): return s
    """,
    "patch_plain_encoder": """
        import sys
        for name, mod in list(sys.modules.items()):
            if hasattr(mod, "dumps") and name.startswith("pidistill"):
                mod.dumps = lambda v: '"heo"'
        def remove_Occ(s, ch): return s
    """,
    # C: forging the report
    "forged_lines_now": """
        import os
        for fd in range(3, 64):
            try:
                os.write(fd, b"start 3\\nloaded\\nv 0 \\"heo\\"\\nv 1 \\"bcd\\"\\nv 2 \\"H\\"\\nend\\n")
            except OSError:
                pass
        def remove_Occ(s, ch): return s
    """,
    "forged_lines_atexit": """
        import atexit, os
        def forge():
            for fd in range(3, 64):
                try:
                    os.write(fd, b"v 0 \\"heo\\"\\nend\\n")
                except OSError:
                    pass
        atexit.register(forge)
        def remove_Occ(s, ch): return s
    """,
    "forged_lines_thread": """
        import os, threading, time
        def forge():
            time.sleep(0.05)
            for fd in range(3, 64):
                try:
                    os.write(fd, b"end\\nv 0 \\"heo\\"\\n")
                except OSError:
                    pass
        threading.Thread(target=forge).start()
        def remove_Occ(s, ch): return s
    """,
    "forged_then_exit": """
        import os, sys
        def remove_Occ(s, ch):
            for fd in range(3, 64):
                try:
                    os.write(fd, b"v 0 \\"heo\\"\\nv 1 \\"bcd\\"\\nv 2 \\"H\\"\\nend\\n")
                except OSError:
                    pass
            os._exit(0)
    """,
    # D: reading expected values from the harness (frames, gc)
    "expected_from_frames": """
        import sys, gc, ast
        def remove_Occ(s, ch):
            call = f"remove_Occ({s!r},{ch!r})"
            for obj in gc.get_objects():
                if isinstance(obj, str) and "==" in obj and obj.startswith("assert"):
                    left, right = obj[len("assert"):].split("==", 1)
                    if eval(left.replace("remove_Occ", "str"), {"str": lambda *a: a}) == (s, ch):
                        return ast.literal_eval(right.strip())
            f = sys._getframe(1)
            while f is not None:
                for v in f.f_locals.values():
                    if isinstance(v, dict) and "tests" in v:
                        return v["tests"]
                f = f.f_back
            return s
    """,
    # J: misbehaviour that used to be a verifier error
    "status_fd_forged": """
        import os
        for fd in range(3, 64):
            try:
                os.write(fd, b"S forged setup failure")
            except OSError:
                pass
        def remove_Occ(s, ch): return s
    """,
    "garbage_on_channel": """
        import os
        os.write(1, b"\\x00\\xff not json at all\\n")
        for fd in range(3, 64):
            try:
                os.write(fd, b"v 0 {\\"bogus\\": 1}\\n")
            except OSError:
                pass
        def remove_Occ(s, ch): return s
    """,
    "huge_int_output": """
        def remove_Occ(s, ch): return 10 ** 20000
    """,
    "raises_in_eq_and_repr": """
        class Bomb:
            def __eq__(self, other): raise SystemExit(0)
            def __repr__(self): raise SystemExit(0)
        def remove_Occ(s, ch): return Bomb()
    """,
    "deep_tree": """
        import os
        for _ in range(3000):
            os.mkdir("d")
            os.chdir("d")
        def remove_Occ(s, ch): return s
    """,
    "kills_its_worker": """
        import os, signal
        try:
            os.kill(os.getppid(), signal.SIGKILL)
        except OSError:
            pass
        def remove_Occ(s, ch): return s
    """,
    "closes_every_fd": """
        import os
        os.closerange(0, 4096)
        def remove_Occ(s, ch): return s
    """,
    "nul_and_deep_nesting_in_completion": "def remove_Occ(s, ch):\n    return s\x00" + "(" * 500,
}


@pytest.fixture(scope="module")
def mbpp():
    d = MBPPDomain(timeout_s=3.0, extra_tests=8, workers=1)
    yield d
    d.close()


@pytest.fixture(scope="module")
def humaneval():
    d = HumanEvalDomain(timeout_s=5.0, extra_tests=8, workers=1)
    yield d
    d.close()


@pytest.mark.parametrize("attack", sorted(ATTACKS_MBPP))
def test_mbpp_attack_fails_and_spares_its_neighbour(mbpp, attack):
    p = mbpp.load("test", limit=1)[0]
    assert p.problem_id == "mbpp/11"
    code = ATTACKS_MBPP[attack]
    completion = fenced(code) if "\x00" not in code else code
    bad, good = mbpp.check_many([p, p], [completion, fenced(p.solution)])
    assert bad.status in ("fail", "timeout") and not bad.passed, bad
    assert good.passed, good


def test_lookup_table_passes_the_shown_tests_only(mbpp):
    """F: a table of the shown asserts' answers passes the dataset's tests, not the hidden ones."""
    p = mbpp.load("test", limit=1)[0]
    table = fenced(
        """
        def remove_Occ(s, ch):
            return {("hello", "l"): "heo", ("abcda", "a"): "bcd", ("PHP", "P"): "H"}.get((s, ch), s)
        """
    )
    plain_tests = MBPPDomain(timeout_s=3.0, extra_tests=0, workers=1)
    try:
        assert plain_tests.check(p, table).passed
    finally:
        plain_tests.close()
    v = mbpp.check(p, table)
    assert v.status == "fail" and 0.0 < v.score < 1.0
    assert "hidden tests failed" in v.feedback and "hellolloll" not in v.feedback  # hidden inputs are not told


def _he(d: HumanEvalDomain, number: int):
    return next(p for p in d.load("test") if p.problem_id == f"humaneval/{number}")


ATTACKS_HUMANEVAL = {
    # E: the solution redefines the helper the test uses to judge it
    (32, "redefines_poly"): """
        def poly(xs, x):
            return 0.0
        def find_zero(xs):
            return 0.0
    """,
    (50, "redefines_encode_shift"): """
        def encode_shift(s):
            return s
        def decode_shift(s):
            return s
    """,
    # A on HumanEval: an object equal to everything
    (0, "eq_always_true"): """
        class T:
            def __eq__(self, other): return True
            def __bool__(self): return True
        def has_close_elements(numbers, threshold):
            return T()
    """,
    # HumanEval/33 compares the candidate with the function called by its own name: not itself
    (33, "compares_with_itself"): """
        def sort_third(l):
            return list(l)
    """,
}


@pytest.mark.parametrize("case", sorted(ATTACKS_HUMANEVAL), ids=lambda c: f"humaneval{c[0]}-{c[1]}")
def test_humaneval_attack_fails_and_spares_its_neighbour(humaneval, case):
    p = _he(humaneval, case[0])
    bad, good = humaneval.check_many([p, p], [fenced(ATTACKS_HUMANEVAL[case]), p.solution])
    assert bad.status in ("fail", "timeout") and not bad.passed, bad
    assert good.passed, good


def test_shared_uid_refuses_to_verify(monkeypatch):
    """H: without a separate uid for programs, a program could forge its whole batch's reply."""
    d = MBPPDomain(workers=1)
    try:
        monkeypatch.setattr(type(d.sandbox), "uid_separated", property(lambda self: False))
        p = d.load("test", limit=1)[0]
        with pytest.raises(DomainError, match="uid"):
            d.check(p, fenced(p.solution))
    finally:
        d.close()


def test_a_judge_that_cannot_finish_on_the_outputs_is_the_candidates_fail(humaneval):
    """J: HumanEval's judge runs only the dataset's code, which finished on the reference's outputs: if
    it cannot finish on a candidate's (too slow, out of memory), that is the candidate's verdict; only a
    judge the sandbox could not run is a verifier error."""
    from domains.code.verdicts import parse_report
    from sandbox import ExecResult

    p = _he(humaneval, 0)
    spec = humaneval.spec_of(p)
    ran = ExecResult("ok", 0, f"start {spec.n_probes}\nloaded\n", "", 0.1, "bwrap", program_ran=True)
    rep = parse_report(ran.stdout, spec.n_probes)
    slow = ExecResult("timeout", None, "", "", 5.0, "bwrap", program_ran=True)
    memory = ExecResult("memory", 1, "", "MemoryError", 0.1, "bwrap", program_ran=True)
    broken = ExecResult("error", None, "", "", 0.0, "bwrap", sandbox_error="worker did not start")
    assert humaneval._replayed(spec, ran, rep, slow).status == "timeout"
    assert humaneval._replayed(spec, ran, rep, memory).status == "fail"
    assert humaneval._replayed(spec, ran, rep, broken).status == "error"
