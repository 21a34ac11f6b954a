"""The try-again loop's pieces: which attempts fail, follow-up requests, schedules, curriculum, smoke scaling.
(The PI each follow-up carries: tests/test_pi.py.)"""

from __future__ import annotations

from dataclasses import replace

import pytest
from attempt_factory import make_attempt

from domains import get_domain
from experiments.config import SMOKE_RETRY_MODEL, load_config, preset_names
from tasks.curriculum import _pool, dynamic_problems, history
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


def test_dynamic_curriculum_reads_first_try_pass_rates_from_sql(pidistill_home):
    """Audit: the running pass rates count first tries (the model's own rate), not the retries that only
    failures get: a problem only a retry solved is at 0, outside the band, not half-solved."""
    cfg = load_config(
        "demo", ["curriculum.mode=dynamic", "curriculum.pool_size=60", "domain.train_size=10", "curriculum.explore=0"]
    )
    assert cfg.curriculum.pass_rate_from == "first_tries"
    pool = _pool(cfg, 0, 60)
    only_retries, half = pool[0].problem_id, pool[1].problem_id
    earlier = RoundKey("r", "a", 0, 1, str(pidistill_home))

    def row(pid, i, passed, level=0):
        return make_attempt(
            problem_id=pid,
            attempt_id=f"{pid}-{i}",
            attempt_idx=level,
            passed=passed,
            status="pass" if passed else "fail",
        )

    rows = [row(only_retries, i, False) for i in range(4)] + [row(only_retries, 4, True, level=1)]
    rows += [row(half, 0, True), row(half, 1, False), row(half, 2, True, level=1)]
    earlier.write("attempts", "train", rows)
    key = RoundKey("r", "a", 0, 2, str(pidistill_home))
    assert history(cfg, key) == {only_retries: 0.0, half: 0.5}
    chosen = [p.problem_id for p in dynamic_problems(cfg, key, history(cfg, key))]
    assert chosen[0] == half and only_retries not in chosen  # in the band first; at 0, after the untried
    every = cfg.model_copy(update={"curriculum": cfg.curriculum.model_copy(update={"pass_rate_from": "all_attempts"})})
    assert history(every, key) == {only_retries: 0.2, half: pytest.approx(2 / 3)}  # as before the setting
    assert [p.problem_id for p in dynamic_problems(every, key, history(every, key))][:2] == [half, only_retries]


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


class _FakeSampler:
    """n completions per prompt, named by prompt and sample; no model."""

    name, model_ref, tokenizer, policy_digest = "fake", "m", None, None

    def generate(self, prompts, *, n=1, seed=0, **_):
        from models.sampling.base import Completion

        return [[Completion(f" c{i}.{j}", 4, 2, "stop") for j in range(n)] for i in range(len(prompts))]


def test_a_fan_follows_each_failed_first_try_up_k_times_in_one_level():
    """retry.shape fan: one request per failed first try (parent = the first try), sampled K times at level 1:
    attempt_idx 1, sample_idx 0..K-1, distinct attempt ids; both strategies alike."""
    from models.prompts import PromptStyle
    from tasks.follow_ups import follow_up_levels
    from tasks.sample import DrawSettings, draw, samples_per_request

    by_id = {p.problem_id: p for p in PROBLEMS}
    rows = [_failed_row(p) for p in PROBLEMS[:3]]
    key = RoundKey("r", "a", 0, 1, "/tmp")
    for strategy in ("retry", "resample"):
        cfg = load_config("demo", ["retry.shape=fan", f"retry.strategy={strategy}"])
        k = cfg.retry.max_retries
        assert list(follow_up_levels(cfg)) == [1] and samples_per_request(cfg, 1) == k == 3
        assert samples_per_request(cfg, 0) == cfg.sampling.n
        reqs = follow_ups(cfg, 0, 1, by_id, rows, 1)
        assert [(r.attempt_idx, r.parent_id) for r in reqs] == [(1, a.attempt_id) for a in rows]
        out = draw(
            _FakeSampler(),
            PromptStyle(False),
            key,
            reqs,
            phase="train",
            seed=0,
            settings=DrawSettings(samples_per_request(cfg, 1), 1.0, 1.0, 8, ()),
        )
        assert [(a.parent_id, a.attempt_idx, a.sample_idx) for a in out] == [
            (f.attempt_id, 1, s) for f in rows for s in range(k)
        ]
        assert len({a.attempt_id for a in out}) == len(out) == 3 * k


def test_a_chain_has_k_levels_and_stops_at_a_pass_unless_its_budget_is_fixed():
    """until_pass: the next level follows up the follow-ups that failed. fixed: every chain goes on, from its
    follow-up when that failed, else (passed, or a verifier error) from its last failed attempt again."""
    from tasks.follow_ups import follow_up_levels, next_parents
    from tasks.sample import samples_per_request

    first = [_failed_row(p) for p in PROBLEMS[:3]]
    latest = [
        make_attempt(attempt_id=f"f{i}", parent_id=a.attempt_id, attempt_idx=1, status=s, passed=s == "pass")
        for i, (a, s) in enumerate(zip(first, ("pass", "fail", "error")))
    ]
    until_pass = load_config("demo", ["retry.budget=until_pass"])
    assert list(follow_up_levels(until_pass)) == [1, 2, 3] and samples_per_request(until_pass, 2) == 1
    assert next_parents(until_pass, first, latest) == [latest[1]]
    fixed = load_config("demo", ["retry.budget=fixed"])
    assert list(follow_up_levels(fixed)) == [1, 2, 3]
    assert next_parents(fixed, first, latest) == [first[0], latest[1], first[2]]
    assert list(follow_up_levels(load_config("demo", ["retry.max_retries=0"]))) == []
    assert list(follow_up_levels(load_config("demo", ["retry.max_retries=0", "retry.shape=fan"]))) == []


def test_a_parent_followed_up_again_gets_the_same_prompt():
    """A fixed chain asks a parent again after a passing follow-up: the same retry prompt (PI seeded by the
    parent), new samples of it (the level is in the sampler's seed)."""
    by_id = {p.problem_id: p for p in PROBLEMS}
    rows = [_failed_row(p) for p in PROBLEMS[:3]]
    cfg = load_config("demo", ["retry.budget=fixed", "retry.feedback=gibberish"])
    level1, level2 = follow_ups(cfg, 0, 1, by_id, rows, 1), follow_ups(cfg, 0, 1, by_id, rows, 2)
    assert [r.prompt for r in level1] == [r.prompt for r in level2]
    assert [r.attempt_idx for r in level2] == [2, 2, 2] and [r.parent_id for r in level2] == [
        a.attempt_id for a in rows
    ]


def test_retry_shape_and_budget_at_their_defaults_leave_the_config_hash_alone():
    """Hashes predate the two fields: at their defaults they are not stored; set otherwise they are."""
    base = load_config("star-try-again")
    spelled = load_config("star-try-again", ["retry.shape=chain", "retry.budget=until_pass"])
    assert spelled.config_hash() == base.config_hash()
    assert '"shape"' not in base.canonical_json() and '"budget"' not in base.canonical_json()
    for override in ("retry.shape=fan", "retry.budget=fixed"):
        changed = load_config("star-try-again", [override])
        assert changed.config_hash() != base.config_hash() and override.split("=")[1] in changed.canonical_json()
    k = load_config("k-sweep")  # the preset spells the defaults out: its hash is the one it always had
    assert k.retry.shape == "chain" and k.retry.budget == "until_pass" and '"shape"' not in k.canonical_json()
    assert load_config("demo").retry.budget == load_config("double-sample-vs-retry").retry.budget == "fixed"
