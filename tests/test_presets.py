"""Presets end to end at micro scale (`--smoke`): a representative subset; `make smoke-presets` runs all.

Covered here: code + sandbox + verifier feedback (code-retry), three PI arms (pi-wrong-answer), per-round
and per-retry temperatures over two rounds (temperature-schedule), cross-model retry, the dynamic
curriculum reading DuckDB between rounds, and self-diagnosis (two sampling stages per retry).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from experiments.config import load_config
from storage.catalog import query

pytestmark = pytest.mark.slow


def _arms_landed(run_prefix: str) -> dict[str, set[str]]:
    df = query(f"""select r.experiment, a.arm from attempts a join runs r using (run_id)
                   where a.phase = 'train' and r.run_id like '{run_prefix}%' group by all""")
    out: dict[str, set[str]] = {}
    for exp, arm in df.values.tolist():
        out.setdefault(exp, set()).add(arm)
    return out


def test_smoke_subset_lands_attempts_for_every_arm(tiny_model: Path, pidistill_home: Path, capsys):
    presets = ["code-retry", "pi-wrong-answer", "temperature-schedule", "cross-model-retry"]
    assert main(["smoke", *presets]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") >= len(presets), out[-2000:]
    landed = _arms_landed("")
    for name in presets:
        assert landed[name] == {a.name for a in load_config(name).arms}, name
    temps = query("""select arm, round, attempt_idx, any_value(temperature) t from attempts a join runs r using (run_id)
                     where r.experiment = 'temperature-schedule' and phase = 'train' group by all order by all""")
    by = {(a, r, k): t for a, r, k, t in temps.values.tolist()}
    assert by[("anneal", 1, 0)] == 1.0 and by[("anneal", 2, 0)] == 0.6
    assert by[("hot-retry", 1, 1)] == 1.1 and by[("constant", 2, 1)] == 0.8
    fb = query("""select count(*) n from attempts a join runs r using (run_id)
                  where r.experiment = 'code-retry' and pi_kind = 'verifier_feedback' and pi_text != ''""")
    assert fb.n.tolist()[0] > 0


def test_smoke_skips_lean_presets_without_lean(tiny_model: Path, pidistill_home: Path, capsys):
    import shutil

    if shutil.which("lake"):
        pytest.skip("Lean is installed here")
    assert main(["smoke", "lean-retry"]) == 0
    out = capsys.readouterr().out
    assert "lean-retry" in out and "skipped: " in out and "Lean not found" in out


def test_opsd_presets_run_and_store_student_rollouts_with_the_teacher_prompt(tiny_model: Path, pidistill_home: Path):
    assert main(["smoke", "opsd-null", "opsd-dynamic-curriculum"]) == 0
    landed = _arms_landed("")
    assert landed["opsd-null"] == {"no-train", "opsd"}
    rollouts = query("""select r.experiment, a.arm, a.round, a.pi_kind, a.prompt, a.teacher_prompt, a.pi_text
                        from attempts a join runs r using (run_id) where a.phase = 'opsd'""")
    assert set(rollouts.experiment) == {"opsd-null", "opsd-dynamic-curriculum"}
    assert (rollouts.pi_kind == "reference_solution").all()
    assert all(pi in t and pi not in p for p, t, pi in zip(rollouts.prompt, rollouts.teacher_prompt, rollouts.pi_text))
    provenance = query("""select count(*) n, count(sampler_seed) seeds, count(sample_key) keys,
                                 count(*) filter (where len(completion_token_ids) = n_completion_tokens) ids,
                                 count(policy_digest) digests
                          from attempts where phase = 'opsd'""").iloc[0]
    assert provenance.n == provenance.seeds == provenance.keys == provenance.ids > 0 == provenance.digests
    tr = query("""select r.experiment, t.arm, t.method, t.steps from trainings t join runs r using (run_id)
                  where t.method = 'opsd'""")
    assert (tr.steps > 0).all() and set(tr.experiment) == {"opsd-null", "opsd-dynamic-curriculum"}


def test_dynamic_curriculum_and_self_diagnosis_through_the_flow(tiny_model: Path, pidistill_home: Path):
    assert (
        main(
            [
                "run",
                "opsd-dynamic-curriculum",
                "--smoke",
                "--run-id",
                "dyn",
                "--set",
                "train.method=sft",
                "--set",
                "rounds=2",
                "--set",
                "retry.max_retries=1",
                "--set",
                "retry.feedback=self_diagnosis",
            ]
        )
        == 0
    )
    picked = query("""select arm, round, list(distinct problem_id order by problem_id) ids from attempts
                      where run_id = 'dyn' and phase = 'train' and attempt_idx = 0 group by all order by all""")
    ids = {(a, r): set(x) for a, r, x in picked.values.tolist()}
    assert ids[("static", 1)] == ids[("static", 2)]  # static: the same problems every round
    assert ids[("dynamic", 1)] != ids[("dynamic", 2)]  # dynamic: re-chosen from the history
    # Each retry's PI is the diagnosis the model wrote for the same failed attempt.
    diag = query("""select d.completion diagnosis, r.pi_text
                    from attempts d join attempts r on r.run_id = d.run_id and r.parent_id = d.parent_id
                         and r.phase = 'train' and r.pi_kind = 'self_diagnosis'
                    where d.run_id = 'dyn' and d.phase = 'diagnosis'""")
    assert len(diag) > 0
    assert all(pi == (d.strip() or "(no diagnosis)") for d, pi in zip(diag.diagnosis, diag.pi_text))
