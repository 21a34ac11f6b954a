"""Proof verdicts, cheat detection and have-skeletons (`lean_env.proofs`), and the
miniF2F domain (`domains.lean`).

Verdicts are computed from responses real Lean recorded
(`../shared/data/lean_repl_transcripts`). Domain checks that need a REPL use
`tests/lean_double.py`, a replaying test double (no Lean binary can be
installed where these tests run; see `test_lean_repl.py`); without any REPL,
`check` must raise LeanNotFound instead of failing proofs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from domains import DomainError, data_root, get_domain
from domains.base import Problem, file_sha256
from domains.lean import LeanNotFound, MiniF2FDomain
from domains.pi import PrivilegedInfo, pi_section
from lean_env.proofs import (
    find_cheats,
    format_messages,
    have_skeleton,
    have_statements,
    judge_outcome,
    judge_response,
    mask_comments,
    split_declaration,
)
from lean_env.protocol import (
    CommandResponse,
    Message,
    Pos,
    parse_request,
    parse_response,
    read_request_blocks,
    split_responses,
)
from lean_env.repl import CheckOutcome

ROOT = data_root() / "lean_repl_transcripts"
DOUBLE = str(Path(__file__).with_name("lean_double.py"))


def recorded(name: str, i: int):
    """(request, typed response) number `i` of transcript `name`."""
    reqs = read_request_blocks((ROOT / f"{name}.in").read_text(encoding="utf-8"))
    outs = split_responses((ROOT / f"{name}.expected.out").read_text(encoding="utf-8"))
    req = parse_request(reqs[i])
    return req, parse_response(outs[i], req)


@pytest.fixture
def no_lean(monkeypatch):
    monkeypatch.delenv("PIDISTILL_LEAN_PROJECT", raising=False)
    monkeypatch.delenv("PIDISTILL_LEAN_REPL", raising=False)


# --------------------------------------------------------------------------- verdicts from recorded responses


def test_complete_proof():
    req, resp = recorded("line_breaks", 2)  # theorem bar ... rfl  ->  {"env": 2}
    v = judge_response(resp, req.cmd)
    assert v.complete and v.status == "complete" and v.feedback == ""
    req, resp = recorded("Mathlib/H20231110", 1)
    assert judge_response(resp, req.cmd).complete


def test_errors_give_feedback_with_positions():
    req, resp = recorded("incomplete", 1)
    v = judge_response(resp, req.cmd)
    assert v.status == "error" and not v.complete and len(v.errors) == 2
    assert v.feedback.startswith("line 3, column 19: error: unsolved goals\ncase pos")
    assert "line 1, column 26: error: unsolved goals\ncase neg" in v.feedback
    _, resp = recorded("Mathlib/placeholder_synthesis", 1)
    assert "don't know how to synthesize placeholder" in judge_response(resp).feedback


def test_sorry_is_incomplete():
    req, resp = recorded("term_sorry", 0)
    v = judge_response(resp)  # from Lean's answer alone, without scanning the text
    assert v.status == "incomplete" and "uses `sorry`" in v.feedback and "⊢ Nat" in v.feedback
    # a "declaration uses 'sorry'" warning alone (older REPLs quote it differently) is enough
    warn = CommandResponse(
        env=3, messages=(Message(severity="warning", pos=Pos(line=1, column=8), data="declaration uses 'sorry'"),)
    )
    assert judge_response(warn).status == "incomplete"
    # errors win, and say that there is a sorry too
    req, resp = recorded("have_by_sorry", 0)
    v = judge_response(resp, req.cmd)
    assert v.status == "error" and "unsolved goals" in v.feedback and "also contains `sorry`" in v.feedback


def test_warnings_do_not_fail_a_proof():
    _, resp = recorded("infotree", 0)  # only an unused-variable warning
    assert judge_response(resp).complete


def test_cheats_fail_even_when_lean_accepts():
    _, ok = recorded("line_breaks", 2)
    assert judge_response(ok, "theorem t : 2 ^ 10 = 1024 := by native_decide").status == "cheat"
    assert judge_response(ok, "theorem t : 2 ^ 10 = 1024 := by native_decide", allow_native_decide=True).complete
    v = judge_response(ok, "axiom magic : False\ntheorem t : 1 = 2 := magic.elim")
    assert v.status == "cheat" and "axiom" in v.feedback


def test_repl_errors_and_proof_steps():
    _, err = recorded("unknown_environment", 0)
    assert judge_response(err).status == "repl_error" and "Unknown environment" in judge_response(err).feedback
    _, done = recorded("readme", 2)
    assert judge_response(done).complete
    _, open_goals = recorded("readme", 1)
    assert judge_response(open_goals).status == "incomplete"
    _, mvars = recorded("name_generator", 2)
    assert "metavariable" in judge_response(mvars).feedback
    _, tactic_error = recorded("invalid_tactic", 1)
    assert judge_response(tactic_error).status == "error"


def test_outcomes():
    assert judge_outcome(CheckOutcome("timeout", None, "no answer within 60s")).status == "timeout"
    assert judge_outcome(CheckOutcome("crash", None, "INTERNAL PANIC")).status == "crash"
    _, resp = recorded("line_breaks", 2)
    assert judge_outcome(CheckOutcome("ok", resp)).complete


def test_format_messages_truncates():
    long = Message(severity="error", pos=Pos(line=2, column=0), data="x" * 5000)
    text = format_messages((long, long))
    assert len(text) <= 2000 and text.startswith("line 2, column 0: error: xxx")


# --------------------------------------------------------------------------- cheats


@pytest.mark.parametrize(
    "code, cheats",
    [
        ("  nlinarith [sq_nonneg (x - 1)]", []),
        ("  sorry", ["sorry"]),
        ("  exact (admit)", ["admit"]),
        ("  exact sorryAx _ false", ["sorryAx"]),
        ("  native_decide", ["native_decide"]),
        ("  decide +native", ["native_decide"]),
        ("axiom cheat : False", ["axiom"]),
        ("@[implemented_by f] def g := 1", ["implemented_by"]),
        ("set_option debug.skipKernelTC true in", ["skipKernelTC"]),
        ('run_cmd Lean.logInfo "x"', ["metaprogramming"]),
        ("  simp -- sorry, admit and native_decide in a comment", []),
        ("  /- sorry /- nested -/ admit -/ simp", []),
        ('  simp [show "sorry" = "sorry" from rfl]', []),
        ("  exact no_sorry_here.trans h.sorry'", []),
    ],
)
def test_find_cheats(code, cheats):
    assert find_cheats(code) == cheats


def test_mask_comments_keeps_layout():
    code = 'a -- c\nb /- x\n y -/ c "s--"'
    masked = mask_comments(code)
    assert len(masked) == len(code) and masked.count("\n") == 2
    assert masked.split() == ["a", "b", "c", '"s--"']
    assert mask_comments(code, strings=True).split() == ["a", "b", "c", '"', '"']


# --------------------------------------------------------------------------- have-skeletons

REFERENCE = """theorem mathd_algebra_10 (x y : ℝ) (h₀ : x + y = 10) (h₁ : x - y = 2) : x = 6 := by
  -- add the equations
  have h₂ : 2 * x = 12 := by
    linarith [h₀, h₁]
  have h₃ : x = 6 := by linarith
  have h₄ :
      y = 4 := by
    nlinarith [sq_nonneg (x - y)]
  have := h₀.symm
  · have inner : (1 : ℝ) = 1 := rfl
    exact h₃
  exact h₃
"""


def test_have_skeleton_of_a_declaration():
    assert have_skeleton(REFERENCE) == (
        "theorem mathd_algebra_10 (x y : ℝ) (h₀ : x + y = 10) (h₁ : x - y = 2) : x = 6 := by\n"
        "  have h₂ : 2 * x = 12 := by sorry\n"
        "  have h₃ : x = 6 := by sorry\n"
        "  have h₄ : y = 4 := by sorry\n"
        "  have := h₀.symm\n"
        "  sorry"
    )
    assert have_statements(REFERENCE) == [
        "have h₂ : 2 * x = 12 := by sorry",
        "have h₃ : x = 6 := by sorry",
        "have h₄ : y = 4 := by sorry",
    ]


def test_have_skeleton_of_a_recorded_proof():
    # the proof Lean checked in Mathlib/line_breaks (comments, intro, a nested tactic block)
    req, resp = recorded("Mathlib/line_breaks", 1)
    skeleton = have_skeleton(req.cmd)
    assert skeleton.endswith("  intro h1 h2 p\n  have q : Q := by sorry\n  sorry")
    assert skeleton.startswith("-- This theorem demonstrates") and "aesop" not in skeleton
    assert resp.sorries  # Lean saw that proof's own sorry


def test_have_skeleton_of_a_tactic_block_and_edge_cases():
    assert have_skeleton("  intro x\n  obtain ⟨k, hk⟩ : ∃ k, x = 2 * k := by\n    omega\n  omega") == (
        "  intro x\n  obtain ⟨k, hk⟩ : ∃ k, x = 2 * k := by sorry\n  sorry"
    )
    assert have_skeleton("theorem t : 1 = 1 := by rfl") == "theorem t : 1 = 1 := by\n  sorry"
    assert have_skeleton("theorem t : 1 = 1 := rfl") == "theorem t : 1 = 1 := by\n  sorry"
    # `(h : x := v)`-style defaults and `:=` inside brackets do not end a statement
    assert have_statements("  have h : f (a := 1) = 2 := by simp\n  simp") == ["have h : f (a := 1) = 2 := by sorry"]
    assert split_declaration("lemma l (n : ℕ := 3) : n = n := by\n  rfl") == (
        "lemma l (n : ℕ := 3) : n = n := by",
        "\n  rfl",
    )


# --------------------------------------------------------------------------- the minif2f domain


def test_load_splits_and_ids():
    d = get_domain("minif2f")
    train, test = d.load("train"), d.load("test")
    rows = [json.loads(x) for x in (data_root() / "minif2f" / "minif2f.jsonl").read_text().splitlines()]
    assert len(train) == sum(r["split"] == "valid" for r in rows) == 209
    assert len(test) == sum(r["split"] == "test" for r in rows) == 206
    assert all(p.problem_id == "minif2f/" + p.meta["name"] and p.domain == "minif2f" for p in train + test)
    assert {p.meta["split"] for p in train} == {"valid"} and {p.meta["split"] for p in test} == {"test"}
    assert [p.problem_id for p in d.load("test", limit=3)] == [p.problem_id for p in test[:3]]
    assert d.load("test", limit=0) == []
    p = test[0]
    assert p.meta["formal_statement"].endswith(":= by\n") and p.meta["header"].startswith("import Mathlib")
    with pytest.raises(DomainError, match="unknown split"):
        d.load("valid")


def test_prompt_with_and_without_pi():
    d = get_domain("minif2f")
    p = d.load("test", limit=1)[0]
    plain = d.prompt(p)
    assert plain.endswith("```lean4\n" + p.meta["header"] + p.meta["informal_prefix"] + p.meta["formal_statement"])
    assert plain.startswith("Complete the following Lean 4 code:")
    pi = PrivilegedInfo("skeleton", have_skeleton(REFERENCE))
    with_pi = d.prompt(p, pi)
    block = pi_section(pi)
    assert block in with_pi and with_pi.index(block) < with_pi.index("```lean4")
    assert with_pi.endswith(plain[len("Complete the following Lean 4 code:\n\n") :])
    assert d.stop == ("```",)


def test_data_hash_and_custom_path(tmp_path):
    d = get_domain("minif2f")
    assert d.data_hash() == file_sha256(data_root() / "minif2f" / "minif2f.jsonl")
    rows = [json.loads(x) for x in (data_root() / "minif2f" / "minif2f.jsonl").read_text().splitlines()[:2]]
    rows[0]["split"], rows[1]["split"] = "valid", "test"
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    mine = get_domain("minif2f", path=str(f))
    assert len(mine.load("train")) == len(mine.load("test")) == 2  # another file: one split, as-is
    assert mine.data_hash() == file_sha256(f) != d.data_hash()
    f.write_text('{"name": "x"}\n')
    with pytest.raises(DomainError, match="missing field"):
        get_domain("minif2f", path=str(f)).load("test")
    with pytest.raises(DomainError, match="not found"):
        get_domain("minif2f", path=str(tmp_path / "none.jsonl"))
    with pytest.raises(DomainError, match="unknown option"):
        get_domain("minif2f", repl_comand="lake env repl")


def test_check_without_lean_raises_lean_not_found(no_lean):
    d = get_domain("minif2f")  # constructing, loading and prompting need no Lean
    p = d.load("test", limit=1)[0]
    d.prompt(p)
    for call in (lambda: d.check(p, "  nlinarith"), lambda: d.check_many([p], ["  nlinarith"]), d.preflight):
        with pytest.raises(LeanNotFound, match="Lean not found, see pidistill doctor"):
            call()
    with pytest.raises(LeanNotFound, match="no-such-repl"):
        get_domain("minif2f", repl_command="no-such-repl").check(p, "  simp")


def test_proof_code_uses_the_dataset_statement():
    d = get_domain("minif2f")
    p = d.load("test", limit=1)[0]
    stmt = p.meta["formal_statement"]
    assert d.proof_code(p, "  norm_num [h₁]\n```\nsome chatter") == stmt + "  norm_num [h₁]\n"
    restated = "```lean4\nimport Mathlib\n\ntheorem mathd_algebra_478 (b h v : ℝ) : v = 0 := by\n  simp\n```"
    assert d.proof_code(p, restated) == stmt + "\n  simp\n"  # a changed statement is ignored


def _mathlib_problem(name: str, header: str, cmd: str, split_at: str) -> tuple[Problem, str]:
    """A Problem whose statement + completion is a command Lean ran in a recording."""
    cut = cmd.index(split_at)
    stmt, completion = cmd[:cut], cmd[cut:]
    meta = {
        "name": name,
        "split": "test",
        "header": header,
        "informal_prefix": "",
        "formal_statement": stmt,
        "goal": "",
    }
    return Problem(problem_id=f"minif2f/{name}", domain="minif2f", question=stmt, meta=meta), completion


@pytest.fixture
def recorded_problems():
    header = recorded("Mathlib/H20231110", 0)[0].cmd
    ok = _mathlib_problem("h20231110", header, recorded("Mathlib/H20231110", 1)[0].cmd, " apply Real")
    bad = _mathlib_problem(
        "h20231115", "import Mathlib.Tactic.Cases", recorded("Mathlib/H20231115_3", 1)[0].cmd, "\n  induction'"
    )
    return ok, bad


def test_check_with_a_replaying_repl(recorded_problems, no_lean):
    (ok, ok_proof), (bad, bad_proof) = recorded_problems
    d = MiniF2FDomain(
        repl_command=[sys.executable, DOUBLE, "--lookup", str(ROOT), "--crash-on", "CRASH", "--hang-on", "HANG"],
        memory_mb=None,
        timeout=1.0,
        pool_size=2,
    )
    try:
        v = d.check(ok, ok_proof)
        assert v.status == "pass" and v.passed and v.score == 1.0
        v = d.check(bad, bad_proof)
        assert v.status == "fail" and "unsolved goals" in v.feedback and "case succ" in v.feedback
        v = d.check(ok, "  sorry")  # refused before Lean runs
        assert v.status == "fail" and "sorry" in v.feedback
        verdicts = d.check_many(
            [ok, bad, ok, bad, ok],
            [ok_proof, bad_proof, "  native_decide", bad_proof + " -- CRASH", ok_proof + " -- HANG"],
        )
        assert [v.status for v in verdicts] == ["pass", "fail", "fail", "error", "timeout"]
        assert "native_decide" in verdicts[2].feedback and "INTERNAL PANIC" in verdicts[3].feedback
        assert d.check(ok, ok_proof).passed  # the pool recovered from the crash and the timeout
        with pytest.raises(ValueError):
            d.check_many([ok], [])
    finally:
        d.close()


def test_native_decide_allowed_when_configured(recorded_problems, no_lean):
    (ok, ok_proof), _ = recorded_problems
    d = MiniF2FDomain(
        repl_command=[sys.executable, DOUBLE, "--lookup", str(ROOT)], memory_mb=None, allow_native_decide=True
    )
    try:
        # the text differs from any recording, so the double cannot answer: a verifier failure is an error, not a fail
        v = d.check(ok, ok_proof + " <;> native_decide")
        assert v.status == "error" and "no recording" in v.feedback
    finally:
        d.close()


def test_skeleton_pi(no_lean):
    d = get_domain("minif2f")
    p = d.load("test", limit=1)[0]
    pi = d.skeleton_pi(p, "  have hv : v = 1 / 3 * (30 * (13 / 2)) := by\n    rw [h₁, h₂, h₃]\n  linarith")
    assert pi.kind == "skeleton"
    assert (
        pi.text
        == p.meta["formal_statement"].rstrip() + "\n  have hv : v = 1 / 3 * (30 * (13 / 2)) := by sorry\n  sorry"
    )


def test_reference_proofs_give_a_skeleton_pi(tmp_path):
    import json
    import random

    from domains import get_domain
    from domains.pi import make_pi

    d = get_domain("minif2f")
    p = d.load("train", limit=1)[0]
    with pytest.raises(ValueError, match="proofs_path"):
        d.skeleton(p)
    proofs = tmp_path / "proofs.jsonl"
    name = p.meta["name"]
    proofs.write_text(
        json.dumps({"name": name, "proof": "\n  have h1 : 1 + 1 = 2 := by norm_num\n  nlinarith [h1]"}) + "\n"
    )
    d = get_domain("minif2f", proofs_path=str(proofs))
    p = d.load("train", limit=1)[0]
    pi = make_pi("skeleton", d, p, [p], random.Random(0))
    assert "have h1 : 1 + 1 = 2" in pi.text and "sorry" in pi.text and "norm_num" not in pi.text
    assert "have h1" in d.prompt(p, pi)
