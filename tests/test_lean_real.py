"""The Lean layer against real Lean. Runs only where `lake` is on PATH and
$PIDISTILL_LEAN_PROJECT points at a Lake project with Mathlib and
leanprover-community/repl built (the REPL command is `lake env repl`, or
$PIDISTILL_LEAN_REPL); skipped otherwise, with the reason shown by `-ra`.

The transcripts were recorded with REPL commit 8948401 on Lean v4.33.0-rc2:
on that toolchain responses must match them exactly; on another, message
texts may differ, so only their shape is compared.
"""

from __future__ import annotations

import os
import shutil

import pytest

if shutil.which("lake") is None:
    pytest.skip("real-Lean tests: `lake` is not on PATH (no Lean installed here)", allow_module_level=True)
if not os.environ.get("PIDISTILL_LEAN_PROJECT"):
    pytest.skip(
        "real-Lean tests: lake found but $PIDISTILL_LEAN_PROJECT is not set (a Lake project with Mathlib + REPL)",
        allow_module_level=True,
    )

from pathlib import Path

from domains import data_root, get_domain
from lean_env.doctor import doctor, format_doctor
from lean_env.protocol import (
    CommandResponse,
    LeanError,
    ProofStepResponse,
    parse_request,
    parse_response,
    read_request_blocks,
    split_responses,
)
from lean_env.repl import LeanRepl, ReplConfig

ROOT = data_root() / "lean_repl_transcripts"
PROJECT = Path(os.environ["PIDISTILL_LEAN_PROJECT"]).expanduser()
TOOLCHAIN = (PROJECT / "lean-toolchain").read_text().strip() if (PROJECT / "lean-toolchain").is_file() else ""
SAME_LEAN = TOOLCHAIN.endswith("v4.33.0-rc2")
# core transcripts that need no copied .lean/.olean files and no Mathlib
CORE = [
    "readme",
    "proof_step",
    "have_by_sorry",
    "incomplete",
    "term_sorry",
    "unknown_environment",
    "invalid_tactic",
    "line_breaks",
    "invalid_line_break",
    "all_tactics",
    "infotree",
]


def shape(resp):
    if isinstance(resp, LeanError):
        return ("error",)
    if isinstance(resp, ProofStepResponse):
        return ("step", resp.proof_state, len(resp.goals), resp.has_errors, len(resp.sorries))
    assert isinstance(resp, CommandResponse)
    return ("cmd", resp.env, resp.has_errors, len(resp.sorries), len(resp.tactics))


def test_doctor_live():
    rows = doctor(live=True)
    assert all(ok for _, ok, _ in rows), format_doctor(rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", CORE)
def test_core_transcript_against_real_lean(name):
    requests = read_request_blocks((ROOT / f"{name}.in").read_text(encoding="utf-8"))
    expected = split_responses((ROOT / f"{name}.expected.out").read_text(encoding="utf-8"))
    with LeanRepl(ReplConfig(timeout=120)) as repl:
        for block, text in zip(requests, expected):
            req = parse_request(block)
            got, want = repl.run(req), parse_response(text, req)
            if SAME_LEAN:
                assert got == want, f"{name}: {block}"
            else:
                assert shape(got) == shape(want), f"{name} on {TOOLCHAIN}: {block}"


@pytest.mark.slow
def test_minif2f_check_with_real_lean():
    d = get_domain("minif2f", pool_size=1, timeout=300)
    try:
        (p,) = [x for x in d.load("test") if x.meta["name"] == "mathd_algebra_478"]
        good = "  rw [h₁, h₂, h₃]\n  norm_num\n"
        wrong = "  norm_num\n"
        v = d.check(p, good)
        assert v.passed, v.feedback
        verdicts = d.check_many([p, p, p], [wrong, "  sorry\n", good])
        assert [v.status for v in verdicts] == ["fail", "fail", "pass"]
        assert "line" in verdicts[0].feedback and "error" in verdicts[0].feedback
        assert d._pool is not None and d._pool.stats()["header_imports"] == 1  # imported once, reused
    finally:
        d.close()
