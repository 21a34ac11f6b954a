"""Presets end to end at micro scale (`--smoke`): a representative subset; `make smoke-presets` runs all.

Covered here: code + sandbox + verifier feedback (code-retry), three PI arms (pi-wrong-answer), per-round
and per-retry temperatures over two rounds (temperature-schedule), cross-model retry, the dynamic
curriculum reading DuckDB between rounds, and self-diagnosis (two sampling stages per retry).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.config import load_config
from flows.cli import main
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


def test_smoke_skips_what_needs_lean_or_opsd(tiny_model: Path, pidistill_home: Path, capsys):
    assert main(["smoke", "lean-retry", "opsd-null"]) == 0
    out = capsys.readouterr().out
    assert "lean-retry" in out and "skipped: " in out and "Lean not found" in out
    assert "opsd-null" in out and "OPSD" in out


def test_dynamic_curriculum_and_self_diagnosis_through_the_flow(tiny_model: Path, pidistill_home: Path):
    assert main(["run", "opsd-dynamic-curriculum", "--smoke", "--run-id", "dyn", "--set", "train.method=sft",
                 "--set", "rounds=2", "--set", "retry.max_retries=1", "--set", "retry.feedback=self_diagnosis"]) == 0
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
