"""Privileged information (`domains.pi`): every kind renders into a prompt, the domain defaults
(`BaseDomain.reference_answer` / `wrong_answer` / `skeleton` / `preflight`), gibberish, the diagnosis prompt."""

from __future__ import annotations

import random
from typing import get_args

import pytest

from domains import BaseDomain, Domain, Problem, get_domain
from domains.pi import (
    DIAGNOSIS_CUE,
    PI_KINDS,
    PI_TEMPLATES,
    PIKind,
    PIUnavailable,
    diagnosis_prompt,
    gibberish,
    make_pi,
    pi_section,
)
from experiments.config import OPSDConfig, RetryConfig

ARITH = get_domain("arith")
PROBLEMS = ARITH.load("train", limit=20)
FAILED = " 1+1=3. #### 3"


class Plain(BaseDomain):  # a domain with only the defaults: no wrong_answer of its own, no skeletons
    name = "plain"


@pytest.mark.parametrize(
    "kind",
    [
        "none",
        "correct_answer",
        "wrong_answer",
        "gibberish",
        "previous_attempt",
        "verifier_feedback",
        "self_diagnosis",
        "reference_solution",
    ],
)
def test_every_pi_kind_renders_into_the_retry_prompt(kind):
    p = PROBLEMS[0]
    pi = make_pi(
        kind,
        ARITH,
        p,
        PROBLEMS,
        random.Random(0),
        completion=FAILED,
        feedback="final answer 3 is wrong",
        diagnosis="I added wrong",
    )
    assert pi.kind == kind
    prompt = ARITH.prompt(p, pi)
    assert pi_section(pi) in prompt and prompt != ARITH.prompt(p)
    expected_text = {
        "none": "",
        "correct_answer": p.answer,
        "previous_attempt": "1+1=3. #### 3",
        "verifier_feedback": "final answer 3 is wrong",
        "self_diagnosis": "I added wrong",
        "reference_solution": p.solution.strip(),
    }
    if kind in expected_text:
        assert pi.text == expected_text[kind]


def test_wrong_answer_is_plausible_and_wrong():
    for i, p in enumerate(PROBLEMS):
        wrong = make_pi("wrong_answer", ARITH, p, PROBLEMS, random.Random(i)).text
        assert wrong != p.answer and wrong.lstrip("-").isdigit()
        assert abs(int(wrong) - int(p.answer)) <= max(3, int(p.answer) // 5)


def test_wrong_answer_falls_back_to_another_problems_answer_without_a_perturbation():
    p = PROBLEMS[0]
    text = make_pi("wrong_answer", Plain(), p, PROBLEMS, random.Random(0)).text
    assert text != p.answer and text in {q.answer for q in PROBLEMS}


def test_gibberish_matches_length_and_is_seeded():
    assert gibberish(20, random.Random(1)) == gibberish(20, random.Random(1))
    assert gibberish(20, random.Random(1)) != gibberish(20, random.Random(2))
    assert abs(len(gibberish(20, random.Random(3))) - 20) <= 1
    assert len(gibberish(1, random.Random(3))) >= 3


def test_skeleton_needs_a_domain_with_proofs():
    with pytest.raises(PIUnavailable, match="skeleton"):
        make_pi("skeleton", ARITH, PROBLEMS[0], PROBLEMS, random.Random(0))


def test_the_kinds_are_one_list_shared_by_templates_and_config():
    assert set(PI_TEMPLATES) == set(PI_KINDS) == set(get_args(PIKind))
    assert RetryConfig.model_fields["feedback"].annotation == OPSDConfig.model_fields["pi"].annotation == PIKind


def test_base_domain_defaults():
    d = Plain()
    assert d.preflight() is None
    assert d.wrong_answer(PROBLEMS[0], random.Random(0)) is None
    assert d.reference_answer(Problem("p1", "plain", "q", answer="7", solution="s")) == "7"
    assert d.reference_answer(Problem("p1", "plain", "q", solution="s")) == "s"
    with pytest.raises(PIUnavailable, match="no reference answer for p1"):
        d.reference_answer(Problem("p1", "plain", "q"))
    with pytest.raises(PIUnavailable, match="skeleton PI is for Lean"):
        d.skeleton(PROBLEMS[0])
    for kind in ("correct_answer", "gibberish"):
        with pytest.raises(PIUnavailable):
            make_pi(kind, d, Problem("p1", "plain", "q"), PROBLEMS, random.Random(0))


@pytest.mark.parametrize("name", ["arith", "gsm8k", "minif2f"])  # code domains: tests/test_code_domains.py
def test_every_domain_meets_the_contract(name):
    d = get_domain(name)
    assert isinstance(d, BaseDomain) and isinstance(d, Domain) and isinstance(d.stop, tuple)


def test_wrong_answer_unavailable_when_every_answer_is_the_same():
    p = PROBLEMS[0]
    clones = [Problem(f"c{i}", "arith", "q", answer=p.answer) for i in range(3)]
    with pytest.raises(PIUnavailable, match="no wrong answer"):
        make_pi("wrong_answer", Plain(), clones[0], clones, random.Random(0))


def test_diagnosis_prompt_is_the_prompt_the_failed_attempt_and_the_cue():
    p = PROBLEMS[0]
    assert diagnosis_prompt(ARITH, p, FAILED) == ARITH.prompt(p) + FAILED + DIAGNOSIS_CUE


def test_unknown_kind_is_unavailable():
    with pytest.raises(PIUnavailable, match="telepathy"):
        make_pi("telepathy", ARITH, PROBLEMS[0], PROBLEMS, random.Random(0))
