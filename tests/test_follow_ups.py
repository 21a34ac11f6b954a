"""The try-again loop's pieces: which attempts fail, follow-up requests, schedules, curriculum, smoke scaling.
(The PI each follow-up carries: tests/test_pi.py.)"""

from __future__ import annotations

from dataclasses import replace

from attempt_factory import make_attempt

from domains import get_domain
from experiments.config import SMOKE_RETRY_MODEL, load_config, preset_names
from tasks.curriculum import _pool, dynamic_problems
from tasks.follow_ups import failed, follow_ups
from tasks.keys import RoundKey
from tasks.sample import temperature_for

ARITH = get_domain("arith")
PROBLEMS = ARITH.load("train", limit=20)


def _failed_row(p, i=0):
    return make_attempt(
        problem_id=p.problem_id,
        attempt_id=f"{p.problem_id}-{i}",
        completion=" 1+1=3. #### 3",
        status="fail",
        passed=False,
        score=0.0,
        feedback="final answer 3 is wrong",
    )


def test_failed_selects_what_filter_would_reject_but_not_verifier_errors():
    cfg = load_config("demo")
    rows = [
        make_attempt(status="pass", passed=True, score=1.0),
        make_attempt(status="fail", passed=False, score=0.0),
        make_attempt(status="timeout", passed=False, score=0.0),
        make_attempt(status="error", passed=False, score=0.0),
    ]
    assert failed(cfg, rows) == rows[1:3]
    graded = load_config("demo", ["verify.mode=graded", "verify.threshold=0.5"])
    assert failed(graded, [make_attempt(status="fail", passed=False, score=0.6)]) == []


def test_follow_ups_retry_carry_pi_and_resample_do_not():
    by_id = {p.problem_id: p for p in PROBLEMS}
    rows = [_failed_row(p) for p in PROBLEMS[:3]]
    retry = load_config("demo", ["retry.strategy=retry", "retry.feedback=correct_answer"])
    reqs = follow_ups(retry, 0, 1, by_id, rows, 1)
    assert [r.parent_id for r in reqs] == [r.attempt_id for r in rows]
    assert all(
        r.attempt_idx == 1 and r.pi.kind == "correct_answer" and "correct final answer" in r.prompt for r in reqs
    )
    resample = load_config("demo", ["retry.strategy=resample", "retry.feedback=correct_answer"])
    reqs = follow_ups(resample, 0, 1, by_id, rows, 1)
    assert all(r.pi is None and r.prompt == ARITH.prompt(by_id[r.problem.problem_id]) for r in reqs)


def test_follow_ups_pass_the_failed_completion_and_its_feedback_to_the_pi():
    by_id = {p.problem_id: p for p in PROBLEMS}
    rows = [_failed_row(p) for p in PROBLEMS[:2]] + [replace(_failed_row(PROBLEMS[2]), feedback=None)]
    fb = follow_ups(load_config("demo", ["retry.feedback=verifier_feedback"]), 0, 1, by_id, rows, 1)
    assert [r.pi.text for r in fb] == ["final answer 3 is wrong"] * 2 + ["(the checker gave no detail)"]
    prev = follow_ups(load_config("demo", ["retry.feedback=previous_attempt"]), 0, 1, by_id, rows, 1)
    assert all(r.pi.text == "1+1=3. #### 3" for r in prev)


def test_follow_ups_are_deterministic_per_seed():
    by_id = {p.problem_id: p for p in PROBLEMS}
    rows = [_failed_row(p) for p in PROBLEMS]
    cfg = load_config("demo", ["retry.feedback=gibberish"])
    a = [r.prompt for r in follow_ups(cfg, 0, 1, by_id, rows, 1)]
    assert a == [r.prompt for r in follow_ups(cfg, 0, 1, by_id, rows, 1)]
    assert a != [r.prompt for r in follow_ups(cfg, 1, 1, by_id, rows, 1)]


def test_temperature_schedule_and_retry_temperature():
    cfg = load_config("demo", ["sampling.temperature_schedule=[1.0, 0.6]", "retry.temperature=1.2"])
    assert [temperature_for(cfg, r, 0) for r in (1, 2, 3)] == [1.0, 0.6, 0.6]
    assert temperature_for(cfg, 1, 1) == 1.2
    plain = load_config("demo")
    assert temperature_for(plain, 2, 1) == plain.sampling.temperature


def test_dynamic_curriculum_prefers_the_frontier_and_explores():
    cfg = load_config(
        "demo", ["curriculum.mode=dynamic", "curriculum.pool_size=60", "domain.train_size=10", "curriculum.explore=0.2"]
    )
    key = RoundKey("r", "a", 0, 2, "/tmp")
    pool = _pool(cfg, 0, 60)
    history = {p.problem_id: rate for p, rate in zip(pool[:30], [0.0, 1.0, 0.5, 0.25] * 8)}
    chosen = dynamic_problems(cfg, key, history)
    assert len(chosen) == 10 and len({p.problem_id for p in chosen}) == 10
    unseen = [p for p in chosen if p.problem_id not in history]
    seen = [history[p.problem_id] for p in chosen if p.problem_id in history]
    assert len(unseen) == 2  # explore share
    assert seen and all(0.0 < r < 1.0 for r in seen) and seen[0] == 0.5  # closest to 0.5 first
    assert [p.problem_id for p in dynamic_problems(cfg, key, history)] == [p.problem_id for p in chosen]


def test_smoke_keeps_what_arms_vary_and_shrinks_the_rest():
    for name in preset_names():
        cfg = load_config(name, smoke_scale=True)
        assert cfg.model.name_or_path == "tiny" and cfg.seeds == [0] and cfg.domain.train_size == 16
        assert cfg.domain.name in ("arith", "mbpp", "humaneval", "minif2f")
        for arm in cfg.arms:
            eff = cfg.for_arm(arm.name)
            # Local models only; another retry model stays another one (cross-model-retry's arms must differ).
            assert eff.model.name_or_path == "tiny" and eff.retry.model in (None, SMOKE_RETRY_MODEL)
            assert eff.domain.name in ("arith", "mbpp", "humaneval", "minif2f") and eff.domain.train_size == 16
    k = load_config("k-sweep", smoke_scale=True)
    assert [k.for_arm(a).retry.max_retries for a in ("k1", "k3", "k5")] == [1, 3, 5]
    lr = load_config("lr-sweep", smoke_scale=True)
    assert len({lr.for_arm(a.name).train.lr for a in lr.arms}) == 3


def test_every_preset_names_its_seed_result_and_a_real_model():
    names = set(preset_names()) - {"demo", "demo-smollm2"}  # the two demos run local models
    assert len(names) == 21
    for name in names:
        cfg = load_config(name)
        assert cfg.seed_result and cfg.description and cfg.name == name
        assert "/" in cfg.model.name_or_path  # an HF id
        assert cfg.model.chat in ("on", "off")  # each says how its model is prompted (issue 16)
        assert cfg.domain.name in ("gsm8k", "mbpp", "minif2f")
