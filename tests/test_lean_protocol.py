"""The REPL protocol layer against every transcript that real Lean recorded.

`../shared/data/lean_repl_transcripts` holds `X.in` / `X.expected.out` pairs from
leanprover-community/repl's own test suite (commit 8948401, Lean v4.33.0-rc2;
see SOURCES.md section 5): 55 core pairs and 15 under `Mathlib/`, 213 requests.
Every pair is used; none is skipped. Transcripts whose requests read files or
pickles that were not copied (`file*`, `pickle*`, `Mathlib/H20231215*`) are
still parsed and round-tripped here: only running them against real Lean would
need those files. The `line_breaks` ones deliberately contain raw newlines
inside JSON strings; they are read the way the REPL reads them (each line
right-trimmed, then joined), which is what their recorded answers show.
"""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from domains import data_root
from lean_env.protocol import (
    Command,
    CommandResponse,
    FileCommand,
    InfoTreeNode,
    LeanError,
    PickleEnvironment,
    PickleProofState,
    ProofStep,
    ProofStepResponse,
    ProtocolError,
    ResponseBuffer,
    TacticNode,
    TermNode,
    UnpickleEnvironment,
    UnpickleProofState,
    frame_request,
    parse_request,
    parse_response,
    read_request_blocks,
    split_responses,
)

ROOT = data_root() / "lean_repl_transcripts"
NAMES = sorted(str(p.relative_to(ROOT))[: -len(".in")] for p in ROOT.rglob("*.in"))


def pair(name: str) -> tuple[list[str], list[str]]:
    requests = read_request_blocks((ROOT / f"{name}.in").read_text(encoding="utf-8"))
    responses = split_responses((ROOT / f"{name}.expected.out").read_text(encoding="utf-8"))
    return requests, responses


def extras(model) -> list[str]:
    """Fields a response carried that the models do not know (should be none)."""
    found = [f"{type(model).__name__}.{k}" for k in (model.model_extra or {})]
    for value in model.__dict__.values():
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if hasattr(item, "model_extra"):
                found += extras(item)
    return found


def test_every_transcript_pair_is_present():
    assert len(NAMES) == 70, NAMES
    assert sum(1 for n in NAMES if n.startswith("Mathlib/")) == 15
    for name in NAMES:
        assert (ROOT / f"{name}.expected.out").is_file(), name
    assert sum(len(pair(n)[0]) for n in NAMES) == 213


@pytest.mark.parametrize("name", NAMES)
def test_transcript_requests_round_trip(name):
    requests, responses = pair(name)
    assert len(requests) == len(responses) > 0
    for block in requests:
        recorded = json.loads(block)  # strict JSON once read the REPL's way
        req = parse_request(block)
        # serialises to exactly the object the REPL was sent ...
        assert json.loads(req.to_json()) == recorded
        # ... as one line plus a blank line, which reads back as the same request
        framed = frame_request(req)
        assert framed.endswith("}\n\n") and framed.count("\n") == 2
        assert read_request_blocks(framed) == [req.to_json()]
        assert parse_request(req.to_json()) == req


@pytest.mark.parametrize("name", NAMES)
def test_transcript_responses_parse(name):
    requests, responses = pair(name)
    for block, text in zip(requests, responses):
        req = parse_request(block)
        resp = parse_response(text, req)
        assert parse_response(text) == resp  # the shape is inferable without the request too
        assert extras(resp) == [], f"unmodelled fields in {name}: {text[:200]}"
        assert resp.to_dict() == json.loads(text)  # nothing lost
        if isinstance(resp, LeanError):
            continue
        if isinstance(req, (ProofStep, PickleProofState, UnpickleProofState)):
            assert isinstance(resp, ProofStepResponse)
        else:
            assert isinstance(resp, CommandResponse) and resp.env is not None


def test_request_kinds_seen_in_transcripts():
    kinds: dict[str, int] = {}
    for name in NAMES:
        for block in pair(name)[0]:
            kind = type(parse_request(block)).__name__
            kinds[kind] = kinds.get(kind, 0) + 1
    assert set(kinds) == {
        "Command",
        "FileCommand",
        "ProofStep",
        "PickleEnvironment",
        "UnpickleEnvironment",
        "PickleProofState",
        "UnpickleProofState",
    }


def test_readme_transcript_typed():
    requests, responses = pair("readme")
    first = parse_response(responses[0], parse_request(requests[0]))
    assert isinstance(first, CommandResponse) and first.env == 0
    (sorry,) = first.sorries
    assert sorry.proof_state == 0 and sorry.goal == "x : Unit\n⊢ Nat" and sorry.pos.line == 1
    (msg,) = first.messages
    assert msg.severity == "warning" and msg.data == "declaration uses `sorry`" and msg.end_pos.column == 5
    step = parse_response(responses[1], parse_request(requests[1]))
    assert isinstance(step, ProofStepResponse)
    assert step.proof_state == 1 and step.goals == ("x : Unit\n⊢ Int",)
    assert step.proof_status == "Incomplete: open goals remain"
    done = parse_response(responses[2])
    assert done.proof_status == "Completed" and done.goals == ()


def test_error_responses_are_values():
    requests, responses = pair("unknown_environment")
    errors = [parse_response(t) for t in responses if parse_response(t).__class__ is LeanError]
    assert errors and errors[0].message == "Unknown environment."


def test_infotree_nodes_typed_by_kind():
    requests, responses = pair("infotree_theorem")
    resp = parse_response(responses[0], parse_request(requests[0]))
    assert [t.kind for t in resp.infotree] == ["CommandInfo", "CommandInfo"]
    root = resp.infotree[0]
    assert isinstance(root, InfoTreeNode) and root.node.elaborator == "Lean.Elab.Command.elabDeclaration"
    nodes = list(root.walk())
    assert any(isinstance(n.node, TermNode) and n.node.is_binder for n in nodes)
    assert any(n.kind == "CompletionInfo" and n.node is None for n in nodes)
    requests, responses = pair("infotree")
    trees = parse_response(responses[0]).infotree
    tactic = [t.node for t in trees if isinstance(t.node, TacticNode)]
    assert tactic and tactic[0].goals_before == ("h : Int\n⊢ Nat",)


def test_line_breaks_read_like_the_repl():
    # a raw newline inside a JSON string is dropped by the REPL's line reader
    (first, second) = read_request_blocks((ROOT / "invalid_line_break.in").read_text(encoding="utf-8"))
    assert parse_request(first).cmd == "theorem foo : 1 = 1 := bysorry"
    responses = split_responses((ROOT / "invalid_line_break.expected.out").read_text(encoding="utf-8"))
    assert "bysorry" in parse_response(responses[0]).messages[0].data
    # an escaped \n followed by a raw newline keeps exactly one newline
    block = read_request_blocks((ROOT / "line_breaks.in").read_text(encoding="utf-8"))[1]
    assert parse_request(block).cmd == "theorem foo : 1 = 1 := by\n  sorry"


def test_comment_blocks_are_skipped():
    text = '# a comment\n\n-- another\n\n{"cmd": "def f := 1"}\n\n'
    assert read_request_blocks(text) == ['{"cmd": "def f := 1"}']


def test_dispatch_follows_the_repl_order():
    # Lean's derived FromJson ignores extra keys, and Main.lean tries the
    # input kinds in a fixed order: a pickle request wins over a command.
    lenient = {"cmd": "x", "env": 0, "pickleTo": "a.olean"}
    assert parse_request(lenient, strict=False) == PickleEnvironment(env=0, pickle_to="a.olean")
    assert isinstance(parse_request({"proofState": 0, "tactic": "rfl", "pickleTo": "a"}, strict=False), ProofStep)
    with pytest.raises(ProtocolError):  # by default a stray key is an error, not silently dropped
        parse_request(lenient)
    assert isinstance(parse_request({"path": "a.lean", "allTactics": True}), FileCommand)
    assert isinstance(parse_request({"unpickleEnvFrom": "a.olean"}), UnpickleEnvironment)
    with pytest.raises(ProtocolError):
        parse_request({"foo": 1})
    with pytest.raises(ProtocolError):
        parse_request("{not json")


def test_requests_serialise_with_repl_field_names():
    cmd = Command(cmd="theorem t : 1 = 1 := by\n  rfl", env=3, all_tactics=True, infotree="original")
    assert json.loads(cmd.to_json()) == {
        "cmd": "theorem t : 1 = 1 := by\n  rfl",
        "env": 3,
        "allTactics": True,
        "infotree": "original",
    }
    assert frame_request(cmd) == cmd.to_json() + "\n\n" and "\n" not in cmd.to_json()
    assert json.loads(ProofStep(proof_state=2, tactic="simp").to_json()) == {"proofState": 2, "tactic": "simp"}
    assert UnpickleProofState(unpickle_proof_state_from="p.olean").to_dict() == {"unpickleProofStateFrom": "p.olean"}
    with pytest.raises(ValidationError):
        Command(cmd="x", allTactic=True)  # typo: refused, not silently dropped
    with pytest.raises(ValidationError):
        cmd.env = 4  # frozen


def test_response_buffer_any_chunking():
    text = "".join((ROOT / f"{n}.expected.out").read_text(encoding="utf-8") for n in ("readme", "infotree", "calc"))
    expected = split_responses(text)
    rng = random.Random(0)
    for _ in range(5):
        buf, got, i = ResponseBuffer(), [], 0
        while i < len(text):
            j = i + rng.randint(1, 40)
            got += buf.feed(text[i:j])
            i = j
        assert got == expected and buf.pending == "" and buf.noise == []


def test_response_buffer_sets_noise_aside():
    buf = ResponseBuffer()
    out = buf.feed('warning: manifest out of date\n\nnote: x\n{"env": 0}\n\n{"env": 1}\n\n')
    assert [json.loads(t) for t in out] == [{"env": 0}, {"env": 1}]
    assert buf.noise == ["warning: manifest out of date", "note: x"]
    with pytest.raises(ProtocolError):
        split_responses('{"env": 0}\n\n{"env":')
