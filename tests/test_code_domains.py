"""MBPP and HumanEval domains: loading, prompts, extraction, binary + graded verdicts, caching."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from domains import DomainError, PrivilegedInfo, Problem, Verdict, data_root, get_domain
from domains.base import Domain
from domains.code import HumanEvalDomain, MBPPDomain, extract_code, humaneval_solution
from domains.code.mbpp import TRAIN_COPIES_OF_TEST
from domains.pi import pi_section
from sandbox import ExecResult, bwrap_available

needs_data = pytest.mark.skipif(not (data_root() / "mbpp" / "mbpp.jsonl").is_file(), reason="shared data missing")
needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap not available")

BROKEN_MBPP = "\n\nclass _Wrong:\n    pass\n\ndef {name}(*args, **kwargs):\n    return _Wrong()\n"
BROKEN_HUMANEVAL = "    return _Wrong()\n\nclass _Wrong:\n    pass\n"


@pytest.fixture(scope="module")
def mbpp():
    d = MBPPDomain(timeout_s=5.0, workers=2)
    yield d
    d.close()


@pytest.fixture(scope="module")
def humaneval():
    d = HumanEvalDomain(timeout_s=5.0, workers=2)
    yield d
    d.close()


def mbpp_problem(d: MBPPDomain, task_id: int) -> Problem:
    split = next(
        s
        for s, (lo, hi) in {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}.items()
        if lo <= task_id <= hi
    )
    return next(p for p in d.load(split) if p.problem_id == f"mbpp/{task_id}")


# ----------------------------------------------------------------------------- loading


@needs_data
def test_protocol_registry_and_splits(mbpp, humaneval):
    assert isinstance(mbpp, Domain) and isinstance(humaneval, Domain)
    assert get_domain("mbpp").name == "mbpp" and get_domain("humaneval").name == "humaneval"
    ranges = {"test": (11, 510), "prompt": (1, 10), "validation": (511, 600), "train": (601, 974)}
    seen = set()
    for split, (lo, hi) in ranges.items():
        problems = mbpp.load(split)
        ids = [p.meta["task_id"] for p in problems]
        assert problems and all(lo <= i <= hi for i in ids) and ids == sorted(ids)
        seen |= set(ids)
    assert len(seen) == 828 - len(TRAIN_COPIES_OF_TEST)  # train leaves out its copies of test tasks
    assert not seen & set(TRAIN_COPIES_OF_TEST)
    p = mbpp.load("test", limit=2)[0]
    assert p.problem_id == "mbpp/11" and p.domain == "mbpp" and len(p.tests) == 3
    assert p.meta["entry_point"] == "remove_Occ"
    he = humaneval.load("test")
    assert len(he) == 139 and he[0].problem_id == "humaneval/0" and he[0].meta["entry_point"] == "has_close_elements"
    assert len(humaneval.load("test", limit=5)) == 5


@needs_data
def test_split_errors(mbpp, humaneval):
    with pytest.raises(DomainError, match="'dev'"):
        mbpp.load("dev")
    with pytest.raises(DomainError, match="'validation'"):
        humaneval.load("validation")
    with pytest.raises(DomainError, match="train_on_test"):
        humaneval.load("train")
    opted_in = HumanEvalDomain(train_on_test=True)
    assert opted_in.load("train", limit=3) == opted_in.load("test", limit=3)


def test_local_files_and_bad_data(tmp_path):
    rows = [
        {
            "task_id": 700,
            "text": "Add two numbers.",
            "code": "def add(a, b):\r\n    return a + b",
            "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
            "test_setup_code": "",
            "challenge_test_list": [],
        },
        {"task_id": 12, "text": "Negate.", "code": "def neg(a):\n    return -a", "test_list": ["assert neg(1) == -1"]},
    ]
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    d = MBPPDomain(str(f))
    assert [p.problem_id for p in d.load("train")] == ["mbpp/700"]
    assert [p.problem_id for p in d.load("test")] == ["mbpp/12"]
    assert len(MBPPDomain(str(f), split_by_task_id=False).load("test")) == 2
    assert d.data_hash() == MBPPDomain(str(f)).data_hash() and len(d.data_hash()) == 16

    with pytest.raises(DomainError, match="nope.jsonl"):
        MBPPDomain(str(tmp_path / "nope.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(DomainError, match=r"bad\.jsonl:2"):
        MBPPDomain(str(bad)).load("train")
    missing = tmp_path / "missing_field.jsonl"
    missing.write_text(json.dumps({"task_id": 1, "text": "x"}) + "\n")
    with pytest.raises(DomainError, match="missing_field.jsonl:1.*code"):
        MBPPDomain(str(missing)).load("prompt")

    he_rows = [
        {
            "task_id": "HumanEval/7",
            "prompt": 'def inc(x):\n    """x + 1"""\n',
            "canonical_solution": "    return x + 1\n",
            "test": "def check(candidate):\n    assert candidate(1) == 2\n",
            "entry_point": "inc",
        }
    ]
    gz = tmp_path / "he.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(json.dumps(he_rows[0]) + "\n")
    he = HumanEvalDomain(str(gz)).load("test")
    assert [p.problem_id for p in he] == ["humaneval/7"]
    broken = tmp_path / "he_bad.jsonl"
    broken.write_text(json.dumps(dict(he_rows[0], test="def check(candidate):\n    assert (\n")) + "\n")
    with pytest.raises(DomainError, match="he_bad.jsonl"):
        HumanEvalDomain(str(broken)).load("test")


# ----------------------------------------------------------------------------- prompts


@needs_data
def test_prompts_show_tests_and_privileged_information(mbpp, humaneval):
    p = mbpp.load("test", limit=1)[0]
    plain = mbpp.prompt(p)
    assert p.question.strip() in plain and all(t.strip() in plain for t in p.tests)
    assert plain.endswith("```python\n")
    pi = PrivilegedInfo("verifier_feedback", "Test failed: assert remove_Occ('hello','l') == 'heo'")
    with_pi = mbpp.prompt(p, pi)
    assert pi_section(pi) in with_pi and with_pi.endswith("```python\n")
    assert with_pi.index(pi_section(pi)) > with_pi.index(p.tests[-1].strip())

    h = humaneval.load("test", limit=1)[0]
    assert humaneval.prompt(h) == h.question
    attempt = PrivilegedInfo("previous_attempt", 'def f():\n    """quote"""\n    return 1')
    shown = humaneval.prompt(h, attempt)
    assert shown.endswith(h.question)  # the model still continues the function body
    assert "# Your previous attempt was wrong:" in shown and '#     """quote"""' in shown
    compile(shown + h.solution, "prompt", "exec")  # the PI block is inert comments


# ----------------------------------------------------------------------------- extraction


def test_extract_code():
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1\n"
    chat = "Sure! Here you go:\n```python\ndef f():\n    return 1\n```\nThis works because..."
    assert extract_code(chat) == "def f():\n    return 1\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    two = "```text\nnot code\n```\n```python\nimport math\n```\n```python\ndef g():\n    pass\n```"
    assert extract_code(two) == "import math\n"
    assert extract_code(two, entry_point="g") == "def g():\n    pass\n"
    assert extract_code("```python\ndef cut_off(x):\n    return", entry_point="cut_off").startswith("def cut_off")
    # the MBPP prompt opens the fence: code first, then the closing fence and maybe prose
    assert extract_code("def f():\n    return 1\n```\nExplanation", fence_open=True) == "def f():\n    return 1\n"
    assert extract_code("\n```\n```python\ny = 2\n```", fence_open=True) == "y = 2\n"
    assert extract_code("x = 1\n[DONE]", fence_open=True).strip() == "x = 1"
    assert extract_code("```python\nz = 3\n```\nprose", fence_open=True) == "z = 3\n"
    assert extract_code("```\nw = 4\n", fence_open=True) == "\nw = 4\n"
    assert extract_code("") == ""


def test_humaneval_solution_forms():
    prompt = 'from typing import List\n\n\ndef add(a: int, b: int) -> int:\n    """Add."""\n'
    assert humaneval_solution(prompt, "    return a + b\n", "add") == prompt + "    return a + b\n"
    full = "```python\ndef add(a, b):\n    return a + b\n```"
    assert humaneval_solution(prompt, full, "add") == prompt + "\ndef add(a, b):\n    return a + b\n"
    assert humaneval_solution(prompt, "return a + b", "add") == prompt + "    return a + b"


# ----------------------------------------------------------------------------- verdicts


@needs_data
@needs_bwrap
@pytest.mark.slow
def test_every_canonical_solution_passes_and_every_broken_one_fails():
    """With the hidden tests on (8 per problem, and MBPP's challenge tests), as training rewards judge."""
    mbpp, humaneval = MBPPDomain(extra_tests=8), HumanEvalDomain(extra_tests=8)
    try:
        problems = [p for split in ("prompt", "test", "validation", "train") for p in mbpp.load(split)]
        assert len(problems) == 828 - len(TRAIN_COPIES_OF_TEST)  # every task, but train's copies of test tasks
        good = mbpp.check_many(problems, [p.solution for p in problems])
        assert [(p.problem_id, v) for p, v in zip(problems, good) if not v.passed] == []
        assert all(v.score == 1.0 and v.status == "pass" for v in good)
        hidden = [sum(t.hidden for t in mbpp.spec_of(p).tests) for p in problems]
        assert sum(h >= 8 for h in hidden) > 0.8 * len(problems), sorted(hidden)[:50]  # most get all 8
        broken = mbpp.check_many(
            problems, [p.solution + BROKEN_MBPP.format(name=p.meta["entry_point"]) for p in problems]
        )
        assert [p.problem_id for p, v in zip(problems, broken) if v.passed or v.status != "fail"] == []

        he = humaneval.load("test")
        good = humaneval.check_many(he, [p.solution for p in he])
        assert [(p.problem_id, v) for p, v in zip(he, good) if not v.passed] == []
        broken = humaneval.check_many(he, [BROKEN_HUMANEVAL] * len(he))
        assert [p.problem_id for p, v in zip(he, broken) if v.passed or v.status != "fail"] == []
        assert sum(v.score == 0.0 for v in broken) >= 120  # `assert not candidate(...)` passes for a falsy value
    finally:
        mbpp.close()
        humaneval.close()


@needs_data
@needs_bwrap
def test_graded_scores_on_partial_solutions(mbpp, humaneval):
    p11 = mbpp_problem(mbpp, 11)  # remove first and last occurrence of a character
    cases = {
        "def remove_Occ(s, ch):\n    return s.strip(ch)": 2 / 3,  # 'hello','l' fails
        "def remove_Occ(s, ch):\n    return s.replace(ch, '')": 1.0,
        "def remove_Occ(s, ch):\n    return {'hello': 'heo'}.get(s, s)": 1 / 3,
        "def remove_Occ(s, ch):\n    return None": 0.0,
    }
    verdicts = mbpp.check_many([p11] * len(cases), list(cases))
    for (code, expected), v in zip(cases.items(), verdicts):
        assert v.score == pytest.approx(expected), (code, v)
        assert v.passed == (expected == 1.0) and v.status == ("pass" if expected == 1.0 else "fail")
    partial = verdicts[0]
    assert 'Test failed: assert remove_Occ("hello","l") == "heo"' in partial.feedback
    assert "Got: 'hello'" in partial.feedback and len(partial.feedback) <= 500

    h0 = humaneval.load("test", limit=1)[0]  # has_close_elements: 7 asserts, 4 expect True, 3 False
    always_true = humaneval.check(h0, "    return True\n")
    assert always_true.status == "fail" and always_true.score == pytest.approx(4 / 7)
    full_function = "```python\ndef has_close_elements(numbers, threshold):\n    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```"
    assert humaneval.check(h0, full_function).passed


@needs_data
@needs_bwrap
def test_failure_kinds(mbpp):
    p = mbpp_problem(mbpp, 11)
    syntax = mbpp.check(p, "def remove_Occ(s, ch)\n    return s")
    assert (
        syntax.status == "fail"
        and syntax.score == 0.0
        and "SyntaxError" in syntax.feedback
        and "line 1" in syntax.feedback
    )
    crash = mbpp.check(p, "def remove_Occ(s, ch):\n    return s[10**9]")
    assert crash.status == "fail" and "IndexError" in crash.feedback and "solution.py line 2" in crash.feedback
    at_import = mbpp.check(p, "import nonexistent_module_xyz\ndef remove_Occ(s, ch):\n    return s")
    assert at_import.status == "fail" and "ModuleNotFoundError" in at_import.feedback
    wrong_name = mbpp.check(p, "def remove_occ(s, ch):\n    return s.replace(ch, '')")
    assert wrong_name.status == "fail" and "NameError" in wrong_name.feedback and wrong_name.score == 0.0
    # exiting early must not look like success
    for exit_code in ("import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit"):
        v = mbpp.check(p, f"def remove_Occ(s, ch):\n    {exit_code}")
        assert v.status == "fail" and not v.passed, (exit_code, v)
    v = mbpp.check(p, "import os\nos._exit(0)")
    assert v.status == "fail" and "before the tests finished" in v.feedback
    # printing a fake result line (without the run's nonce) changes nothing
    fake = 'print(\'x {"k": "end"}\')\nimport os; os.write(1, b\'{"k": "t", "i": 0, "ok": true}\\n\')\ndef remove_Occ(s, ch):\n    return None'
    assert mbpp.check(p, fake).score == 0.0
    # a solution that prints a lot does not drown the results
    chatty = "def remove_Occ(s, ch):\n    print('x' * 100000)\n    return s.replace(ch, '')"
    assert mbpp.check(p, chatty).passed
    # demo code under a main guard is not run
    assert mbpp.check(
        p, "def remove_Occ(s, ch):\n    return s.replace(ch, '')\nif __name__ == '__main__':\n    input()"
    ).passed


@needs_data
@needs_bwrap
def test_timeout_keeps_partial_score():
    d = MBPPDomain(timeout_s=1.0, workers=1)
    try:
        p = mbpp_problem(d, 11)
        code = "def remove_Occ(s, ch):\n    if s == 'abcda':\n        while True: pass\n    return s.replace(ch, '')"
        v = d.check(p, code)
        assert v.status == "timeout" and not v.passed
        assert v.score == pytest.approx(1 / 3)
        assert 'Timed out after 1s while running: assert remove_Occ("abcda","a") == "bcd"' in v.feedback
        v = d.check(p, "while True:\n    pass")
        assert (v.status, v.score) == ("timeout", 0.0) and "while loading the solution" in v.feedback
    finally:
        d.close()


@needs_data
@needs_bwrap
def test_verdict_cache_skips_identical_code(mbpp, monkeypatch):
    p = mbpp_problem(mbpp, 12)
    calls = []
    real = mbpp.sandbox.run_many

    def counting(programs, limits=None):
        calls.append(len(programs))
        return real(programs, limits)

    monkeypatch.setattr(mbpp.sandbox, "run_many", counting)
    code = p.solution + "\n# variant for the cache test\n"
    first = mbpp.check(p, code)
    again = mbpp.check(p, "```python\n" + code + "```")  # same extracted code
    batch = mbpp.check_many([p, p, p], [code + "#2", code + "#2", code])
    assert first == again == batch[2] and batch[0] == batch[1] and first.passed
    assert calls == [1, 1]  # the duplicate in the batch ran once; the cached one not at all


def test_infrastructure_failures_are_errors(tmp_path):
    row = {
        "task_id": 700,
        "text": "Add.",
        "code": "def add(a, b):\n    return a + b",
        "test_list": ["assert add(1, 2) == 3"],
    }
    f = tmp_path / "one.jsonl"
    f.write_text(json.dumps(row) + "\n")

    class BrokenSandbox:
        def __init__(self, stdout: str = "", error: str = ""):
            self.stdout, self.error = stdout, error

        def run_many(self, programs, limits=None):
            return [ExecResult("error", None, self.stdout, "", 0.0, "test", sandbox_error=self.error) for _ in programs]

    p = MBPPDomain(str(f)).load("train")[0]
    v = MBPPDomain(str(f), sandbox=BrokenSandbox(error="worker died")).check(p, row["code"])  # type: ignore[arg-type]
    assert v == Verdict("error", False, 0.0, v.feedback) and "worker died" in v.feedback
    v = MBPPDomain(str(f), sandbox=BrokenSandbox()).check(p, row["code"])  # type: ignore[arg-type]
    assert v.status == "error" and "no output" in v.feedback
    with pytest.raises(ValueError, match="2 completions"):
        MBPPDomain(str(f)).check_many([p], ["x", "y"])


@needs_data
def test_domain_pickles_without_its_sandbox(mbpp):
    import pickle

    clone = pickle.loads(pickle.dumps(mbpp))
    assert clone.name == "mbpp" and clone._sandbox is None and clone.data_hash() == mbpp.data_hash()
    assert Path(str(clone._source)).is_file()


@needs_data
@needs_bwrap
def test_precompiled_tests_and_their_fallbacks(mbpp, humaneval):
    """Tests travel compiled (marshalled by the host, for the same interpreter) in a sandbox Call;
    another interpreter, or a sandbox without the harness prelude, compiles them from source:
    the verdicts are the same every way."""

    from domains.code import draft_mbpp, harness_call
    from sandbox import Sandbox

    p = mbpp_problem(mbpp, 11)
    h0 = humaneval.load("test", limit=1)[0]
    cases = [
        (mbpp, p, "def remove_Occ(s, ch):\n    return s.strip(ch)"),
        (mbpp, p, p.solution),
        (humaneval, h0, "    return True\n"),
        (humaneval, h0, h0.solution),
    ]
    reference = [d.check(prob, c) for d, prob, c in cases]
    assert [v.status for v in reference] == ["fail", "pass", "fail", "pass"]
    assert "Got: 'hello'" in reference[0].feedback  # the failing side, evaluated by a precompiled expression

    for d, prob, _ in cases:  # checked once already (reference), so now compiled by the host
        assert d.spec_of(prob).payload()["python"] == sys.version
    fresh = draft_mbpp(("assert f(1) == 2",), entry_point="f").spec()
    assert "code" not in fresh.payload() and fresh.payload()["python"] == sys.version  # from its second use
    jobs = {str(i): (d.extract(prob, c), d.spec_of(prob)) for i, (d, prob, c) in enumerate(cases)}
    calls = [harness_call("run", {"solution": sol, **spec.payload()}) for sol, spec in jobs.values()]
    for call in calls:  # as if the sandbox ran another Python: its child compiles the sources
        call.kwargs["spec"] = {**call.kwargs["spec"], "python": "another interpreter"}
    results = dict(zip(jobs, mbpp.sandbox.run_many(calls, mbpp.limits)))
    judged = {
        **mbpp._judged(dict(list(jobs.items())[:2]), results),
        **humaneval._judged(dict(list(jobs.items())[2:]), results),
    }
    assert [judged[k] for k in jobs] == reference

    with Sandbox(mbpp.limits, workers=1) as bare:  # no harness prelude: the harness travels as source
        for d in (MBPPDomain(sandbox=bare), HumanEvalDomain(sandbox=bare)):
            assert [d.check(prob, c) for dd, prob, c in cases if dd.name == d.name] == [
                v for (dd, _, _), v in zip(cases, reference) if dd.name == d.name
            ]
            d.close()


@needs_data
@needs_bwrap
def test_check_many_in_slices_runs_each_distinct_program_once(mbpp, monkeypatch):
    """check_many hands programs to the sandbox in growing slices while it builds the rest;
    a duplicate in a later slice waits for the first copy's verdict instead of running again."""
    problems = mbpp.load("test", limit=60)
    completions = [p.solution if i % 3 else p.solution + "\n# slice test\n" for i, p in enumerate(problems)]
    sent: list[int] = []
    real = mbpp.sandbox.run_many

    def counting(programs, limits=None):
        sent.append(len(programs))
        return real(programs, limits)

    monkeypatch.setattr(mbpp.sandbox, "run_many", counting)
    mbpp._cache.clear()
    verdicts = mbpp.check_many(problems * 2, completions * 2)  # the second half repeats the first
    assert sent == [32, 28] and sum(sent) == 60  # slices of 32, then the rest; duplicates not sent
    assert all(v.passed for v in verdicts) and verdicts[:60] == verdicts[60:]


@needs_data
def test_a_completion_without_code_fails_as_no_answer(mbpp, humaneval):
    """Issue 16: nothing to run is `no_answer` (countable in SQL), not a wrong program and never an error."""
    mp = mbpp_problem(mbpp, 601)
    hp = humaneval.load("test", limit=1)[0]
    for domain, problem in ((mbpp, mp), (humaneval, hp)):
        for empty in ("", "   \n"):
            v = domain.check(problem, empty)
            assert (v.status, v.passed, v.reason) == ("fail", False, "no_answer"), (domain.name, v)
    assert mbpp.check(mp, "```\n```").reason == "no_answer"  # an empty code block


@needs_data
@needs_bwrap
@pytest.mark.parametrize(
    "domain_name, completion",
    [
        ("humaneval", "def has_close_elements(numbers, threshold):\n    return False\x00"),  # NUL: ValueError
        ("humaneval", "def has_close_elements(numbers, threshold):\n    return " + "(" * 5000 + "1" + ")" * 5000),
        ("mbpp", "Here\x00 it is:\n```python\ndef remove_Occ(s, ch):\n    return s\n```"),  # NUL in the prose
        ("mbpp", "def remove_Occ(s, ch):\n    return s\x00"),
    ],
    ids=["humaneval-nul-byte", "humaneval-too-deep", "mbpp-nul-in-prose", "mbpp-nul-byte"],
)
def test_a_completion_the_parser_chokes_on_is_the_programs_fail_never_a_verifier_error(
    mbpp, humaneval, domain_name, completion
):
    domain = {"mbpp": mbpp, "humaneval": humaneval}[domain_name]
    problem = mbpp_problem(mbpp, 11) if domain_name == "mbpp" else humaneval.load("test", limit=1)[0]
    v = domain.check(problem, completion)
    assert v.status == "fail" and not v.passed, v


def test_hidden_tests_keep_the_form_of_the_shown_ones():
    """A hidden test is a shown test's own expression with mutated arguments: `set(f(..))` stays a set
    comparison (an honest solution's order is not judged), `math.isclose` keeps its tolerance."""
    from domains.code.specs import extra_tests

    names = frozenset({"f"})
    e = extra_tests(["assert set(f([1, 2], 3)) == {1}", "assert set(f([4, 5], 1)) == {4}"], names, 4, "p")
    assert e is not None and e.kind == ("close",) and len(e.exprs) > 4
    assert all(x.startswith("set(f([") for x in e.exprs)
    e = extra_tests(["assert math.isclose(f(2.0), 4.0, rel_tol=0.001)"], names, 2, "p")
    assert e is not None and e.kind == ("isclose", (("rel_tol", 0.001),)) and e.exprs[0].startswith("f(")
    assert extra_tests(["assert f(g(1)) == 2"], names, 4, "p") is None  # no literal arguments: no template
    assert extra_tests(["assert f(1) == 2"], names, 0, "p") is None
    assert extra_tests(["assert f(1, 'ab') == 2"], names, 4, "p") == extra_tests(
        ["assert f(1, 'ab') == 2"], names, 4, "p"
    )


def test_training_rewards_judge_hidden_tests_and_the_evaluation_the_datasets_own():
    """Hidden tests decide what trains; the held-out evaluation stays comparable with published pass@1."""
    from experiments.config import load_config
    from tasks.domain import domain_of

    cfg = load_config("code-retry")
    assert cfg.domain.name == "mbpp" and cfg.verify.extra_tests == 8
    assert domain_of(cfg).extra_tests == 8  # type: ignore[attr-defined]
    assert domain_of(cfg, rewards=False).extra_tests == 0  # type: ignore[attr-defined]
    both = load_config("code-retry", ["verify.extra_tests_in_eval=true", "verify.extra_tests=3"])
    assert domain_of(both, rewards=False).extra_tests == 3  # type: ignore[attr-defined]
    with pytest.raises(DomainError, match="extra_tests"):
        MBPPDomain(extra_tests=-1)
