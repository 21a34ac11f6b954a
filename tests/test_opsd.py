"""OPSD on the tiny model: the teacher's input carries PI and the student's does not; identical prompts give
zero loss; the loss falls on a fixed batch; no gradient flows through the teacher."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from domains import PrivilegedInfo, get_domain
from domains.pi import pi_section
from experiments.config import OPSDConfig, TrainConfig
from models.loading import load_model, load_tokenizer
from models.training.opsd import divergence, opsd_loss, rollouts_for, train_opsd

pytestmark = pytest.mark.slow

ARITH = get_domain("arith")
PROBLEMS = ARITH.load("train", limit=8)


@pytest.fixture
def model_and_tokenizer(tiny_model: Path):
    torch.manual_seed(0)
    return load_model(str(tiny_model), device="cpu"), load_tokenizer(str(tiny_model))


def _rollouts(model, tok, cfg=OPSDConfig(), problems=PROBLEMS):
    return rollouts_for(model, tok, ARITH, problems, cfg, seed=1, max_new_tokens=32)


def test_teacher_sees_the_pi_and_the_student_does_not(model_and_tokenizer):
    model, tok = model_and_tokenizer
    for kind in ("reference_solution", "gibberish", "wrong_answer", "verifier_feedback"):
        for r in _rollouts(model, tok, OPSDConfig(pi=kind)):
            block = pi_section(PrivilegedInfo(r.pi_kind, r.pi_text))
            assert r.pi_kind == kind and r.pi_text
            assert r.student_prompt == ARITH.prompt(r.problem) and block not in r.student_prompt
            assert r.teacher_prompt == ARITH.prompt(r.problem, PrivilegedInfo(r.pi_kind, r.pi_text))
            assert block in r.teacher_prompt
            assert r.completion_ids[-1] == tok.eos_token_id


def test_loss_is_zero_when_teacher_and_student_prompts_are_identical(model_and_tokenizer):
    model, tok = model_and_tokenizer
    same = [dataclasses.replace(r, teacher_prompt=r.student_prompt) for r in _rollouts(model, tok)]
    for div in ("reverse_kl", "forward_kl", "jsd"):
        loss = opsd_loss(model, model, tok, same, OPSDConfig(divergence=div))
        assert abs(loss.item()) < 1e-6, div
    assert abs(opsd_loss(model, model, tok, same, OPSDConfig(topk=5)).item()) < 1e-6
    assert opsd_loss(model, model, tok, _rollouts(model, tok), OPSDConfig()).item() > 1e-4  # the PI matters


def test_a_small_step_against_the_gradient_lowers_the_loss_by_what_the_gradient_predicts(model_and_tokenizer):
    """First order: L(θ - ηg) ≈ L(θ) - η|g|². A detached or mis-aligned student side would break it."""
    student, tok = model_and_tokenizer
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    batch = _rollouts(student, tok)
    loss = opsd_loss(student, teacher, tok, batch, OPSDConfig())
    loss.backward()
    grads = [p.grad for p in student.parameters()]
    norm2 = sum(float((g * g).sum()) for g in grads if g is not None)
    assert norm2 > 0 and all(g is not None for g in grads)
    eta = 1e-3 / norm2**0.5  # a step of length 1e-3 in parameter space
    with torch.no_grad():
        for p, g in zip(student.parameters(), grads):
            p.sub_(eta * g)
        after = opsd_loss(student, teacher, tok, batch, OPSDConfig()).item()
    predicted = eta * norm2
    assert 0.5 * predicted < loss.item() - after < 1.5 * predicted, (loss.item(), after, predicted)


def test_loss_decreases_on_a_fixed_batch_and_the_frozen_teacher_does_not_move(model_and_tokenizer):
    """AdamW on one batch drives the loss down: below 0.8x its start within 32 steps at lr 3e-4 (0.54-0.58 over
    rollout seeds 1-3 on the default tiny model; 8 steps at lr 1e-3 overshot, the loss rising on step 2)."""
    student, tok = model_and_tokenizer
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    before = [p.clone() for p in teacher.parameters()]
    batch = _rollouts(student, tok)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-4)
    losses = []
    for _ in range(32):
        loss = opsd_loss(student, teacher, tok, batch, OPSDConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8, losses
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert all(p.grad is None for p in teacher.parameters())


def test_no_gradient_through_a_live_teacher(model_and_tokenizer):
    """With the live teacher (same module), the gradient equals the one against a detached copy of it."""
    model, tok = model_and_tokenizer
    batch = _rollouts(model, tok)
    model.zero_grad()
    opsd_loss(model, model, tok, batch, OPSDConfig()).backward()
    live = [p.grad.clone() for p in model.parameters()]
    frozen = copy.deepcopy(model).requires_grad_(False)
    model.zero_grad()
    opsd_loss(model, frozen, tok, batch, OPSDConfig()).backward()
    assert all(torch.allclose(a, p.grad, atol=1e-7) for a, p in zip(live, model.parameters()))


def test_divergences_against_hand_computed_values():
    s = torch.log_softmax(torch.tensor([[[2.0, 0.5, -1.0]]]), -1)
    t = torch.log_softmax(torch.tensor([[[0.0, 1.0, 0.5]]]), -1)
    ps, pt = s.exp(), t.exp()
    reverse = (ps * (s - t)).sum()
    forward = (pt * (t - s)).sum()
    assert divergence(s, t, OPSDConfig(divergence="reverse_kl")).item() == pytest.approx(reverse.item(), rel=1e-5)
    assert divergence(s, t, OPSDConfig(divergence="forward_kl")).item() == pytest.approx(forward.item(), rel=1e-5)
    m = 0.5 * ps + 0.5 * pt
    jsd = 0.5 * (pt * (t - m.log())).sum() + 0.5 * (ps * (s - m.log())).sum()
    assert divergence(s, t, OPSDConfig(divergence="jsd", beta=0.5)).item() == pytest.approx(jsd.item(), rel=1e-5)
    assert divergence(s, t, OPSDConfig(topk=2)).item() >= 0


@pytest.mark.parametrize("peft", ["full", "lora"])
@pytest.mark.parametrize("teacher", ["live", "frozen", "ema"])
def test_train_opsd_end_to_end(tiny_model: Path, tmp_path: Path, teacher: str, peft: str):
    seen = []
    cfg = TrainConfig(
        method="opsd", lr=1e-4, peft=peft, lora_r=4, opsd=OPSDConfig(teacher=teacher, steps=2, batch_size=4)
    )
    result = train_opsd(
        str(tiny_model),
        PROBLEMS,
        ARITH,
        cfg,
        tmp_path / "ckpt",
        seed=0,
        max_new_tokens=24,
        device="cpu",
        on_rollouts=lambda step, rs: seen.append((step, len(rs))),
    )
    assert result.steps == 2 and result.n_examples == 8 and result.final_loss is not None
    assert seen == [(0, 4), (1, 4)]
    assert (tmp_path / "ckpt" / "config.json").exists() and not (tmp_path / "ckpt" / "adapter_config.json").exists()
    from safetensors.torch import load_file

    after, before = load_file(tmp_path / "ckpt" / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    assert after.keys() == before.keys()  # a LoRA student is saved merged, as a plain model
    assert max(float((after[k] - before[k]).abs().max()) for k in after) > 0  # and it trained
