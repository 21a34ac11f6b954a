"""Presets: what each compares (fast: configs and preflight, no model), and end to end at micro scale (`--smoke`,
slow): a representative subset; `make smoke-presets` runs all.

Covered end to end: code + sandbox + verifier feedback (code-retry), three PI arms (pi-wrong-answer), per-round
and per-retry temperatures over two rounds (temperature-schedule), cross-model retry, the dynamic
curriculum reading DuckDB between rounds, and self-diagnosis (two sampling stages per retry).
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from cli.main import _preset_needs, main
from domains import data_root
from experiments.config import ExperimentConfig, load_config, preset_names
from storage.catalog import query
from tasks.runs import PreflightError, preflight, retry_model_config

LEAN_DOUBLE = str(Path(__file__).with_name("lean_double.py"))


def _retrying_model(cfg: ExperimentConfig) -> dict:
    """The model that samples an arm's retries, as resolve_model gets it: retry.model's, else the arm's own."""
    return (retry_model_config(cfg) or cfg.model).model_dump()


def _what_runs(cfg: ExperimentConfig, arm: str) -> str:
    """An arm's effective config with `retry.model` replaced by the model that retries ('tiny' == no retry.model
    when the arm trains the tiny model: the same run)."""
    effective = cfg.for_arm(arm)
    data = effective.model_dump(mode="json", exclude={"arms"})
    data["retry"]["model"] = _retrying_model(effective)
    return json.dumps(data, sort_keys=True)


@pytest.mark.parametrize("smoke", [False, True])
def test_no_two_arms_of_a_preset_run_the_same_experiment(smoke):
    """--smoke replaced every model with the tiny one and so turned cross-model-retry's arms into one run twice."""
    for name in preset_names():
        cfg = load_config(name, smoke_scale=smoke)
        for a, b in itertools.combinations([arm.name for arm in cfg.arms], 2):
            assert _what_runs(cfg, a) != _what_runs(cfg, b), f"{name} (smoke={smoke}): arms {a} and {b} are the same"


def test_cross_model_retry_smoke_retries_with_another_model_than_it_trains():
    for overrides, trained, other in [([], "tiny", "smollm2-135m"), (["model=smollm2-135m"], "smollm2-135m", "tiny")]:
        cfg = load_config("cross-model-retry", overrides, smoke_scale=True)
        own, cross = cfg.for_arm("self-retry"), cfg.for_arm("cross-model-retry")
        assert own.model.name_or_path == cross.model.name_or_path == trained
        assert _retrying_model(own)["name_or_path"] == trained
        assert _retrying_model(cross)["name_or_path"] == other
    full = load_config("cross-model-retry")
    assert _retrying_model(full.for_arm("cross-model-retry"))["name_or_path"] == "Qwen/Qwen3-4B"
    mine = load_config("cross-model-retry", ["arms=[{name: a, set: {retry.model: tiny}}]"], smoke_scale=True)
    assert mine.for_arm("a").retry.model == "tiny"  # a retry model named with --set is kept


def test_cross_model_retry_smoke_passes_preflight():
    from models.bundled import BundledModelError, gguf_path

    try:
        gguf_path("smollm2-135m")
    except BundledModelError as exc:
        pytest.skip(str(exc))
    preflight(load_config("cross-model-retry", smoke_scale=True))


def test_path_diversity_compares_code_with_lean_at_both_scales():
    for smoke in (False, True):
        cfg = load_config("path-diversity", smoke_scale=smoke)
        assert cfg.arm_domains() == ["mbpp", "minif2f"]
        code, lean = cfg.for_arm("code"), cfg.for_arm("lean")
        assert (code.domain.name, lean.domain.name) == ("mbpp", "minif2f")
        assert code.retry == lean.retry and code.filter == lean.filter and code.sampling.n == lean.sampling.n
    full = load_config("path-diversity")
    assert full.for_arm("lean").model.name_or_path == load_config("lean-retry").model.name_or_path
    assert full.for_arm("lean").sampling.max_new_tokens == load_config("lean-retry").sampling.max_new_tokens
    assert full.for_arm("code").model == load_config("code-retry").model
    assert "Lean" in _preset_needs(full)


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _differences(cfg: ExperimentConfig, a: str, b: str) -> set[str]:
    x, y = (_flat(cfg.for_arm(arm).model_dump(exclude={"arms"})) for arm in (a, b))
    return {k for k in x if x[k] != y[k]}


def test_full_ft_vs_lora_says_its_arms_differ_in_lr_and_has_one_that_isolates_the_method():
    cfg = load_config("full-ft-vs-lora")
    assert {"train.lr", "train.peft"} <= _differences(cfg, "lora", "full")
    assert _differences(cfg, "full", "full-lr-1e-5") == {"train.lr"}  # the rate alone
    assert "train.lr" not in _differences(cfg, "lora", "full-lr-1e-5")  # the method alone (and its sharding)
    assert _differences(cfg, "lora", "full-lr-1e-5") <= {"train.peft", "train.strategy", "train.lora_r"}
    text = " ".join(cfg.description.split())
    assert "10x in learning rate" in text and "LoRA 1e-5" in text and "full fine-tuning 1e-6" in text
    assert cfg.for_arm("full").train.strategy == cfg.for_arm("full-lr-1e-5").train.strategy == "fsdp"


@pytest.fixture
def no_lean(monkeypatch):
    monkeypatch.delenv("PIDISTILL_LEAN_PROJECT", raising=False)
    monkeypatch.delenv("PIDISTILL_LEAN_REPL", raising=False)


def _proofs(tmp_path: Path, skip: int = 0) -> Path:
    """A reference-proof file for every miniF2F valid theorem but the first `skip`."""
    rows = [json.loads(line) for line in (data_root() / "minif2f" / "minif2f.jsonl").read_text().splitlines()]
    names = [r["name"] for r in rows if r["split"] == "valid"][skip:]
    path = tmp_path / f"proofs-{skip}.jsonl"  # a file per content: domains and passed preflights are cached
    path.write_text(
        "".join(json.dumps({"name": n, "proof": "\n  have h : 1 = 1 := rfl\n  simp"}) + "\n" for n in names)
    )
    return path


@pytest.mark.parametrize("smoke", [False, True])
def test_lean_have_skeleton_without_proofs_says_what_to_provide_before_looking_for_lean(smoke, no_lean):
    cfg = load_config("lean-have-skeleton", [] if smoke else ["model=tiny", "model.chat=auto"], smoke_scale=smoke)
    with pytest.raises(PreflightError) as err:
        preflight(cfg)
    message = str(err.value)
    assert "arm 'retry-skeleton': retry.feedback='skeleton': 209 of 209 training problems" in message
    assert '{"name": "<theorem name, as in minif2f.jsonl>", "proof": ' in message
    assert "--set domain.options.proofs_path=/path/to/proofs.jsonl" in message
    assert "domain.options.proofs_path" in load_config("lean-have-skeleton").description
    assert "reference proofs" in _preset_needs(load_config("lean-have-skeleton"))


def test_lean_have_skeleton_with_proofs_passes_preflight_at_both_scales(tmp_path, no_lean):
    repl = (
        f"domain.options.repl_command=[{sys.executable}, {LEAN_DOUBLE}, --lookup, {data_root()}/lean_repl_transcripts]"
    )
    proofs = f"domain.options.proofs_path={_proofs(tmp_path)}"
    preflight(load_config("lean-have-skeleton", [proofs, repl], smoke_scale=True))
    full = load_config("lean-have-skeleton", [proofs, repl, "model=tiny", "model.chat=auto"])
    preflight(full)
    assert "reference proofs" not in _preset_needs(full)
    with pytest.raises(PreflightError, match="Lean not found"):  # then Lean, which is not here
        preflight(load_config("lean-have-skeleton", [proofs], smoke_scale=True))
    partial = f"domain.options.proofs_path={_proofs(tmp_path, skip=1)}"
    with pytest.raises(PreflightError, match="1 of 209 training problems cannot supply it: no reference proof for"):
        preflight(load_config("lean-have-skeleton", [partial, repl], smoke_scale=True))


def _arms_landed(run_prefix: str) -> dict[str, set[str]]:
    df = query(f"""select r.experiment, a.arm from attempts a join runs r using (run_id)
                   where a.phase = 'train' and r.run_id like '{run_prefix}%' group by all""")
    out: dict[str, set[str]] = {}
    for exp, arm in df.values.tolist():
        out.setdefault(exp, set()).add(arm)
    return out


@pytest.mark.slow
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


@pytest.mark.slow
def test_smoke_skips_lean_presets_without_lean(tiny_model: Path, pidistill_home: Path, capsys):
    import shutil

    if shutil.which("lake"):
        pytest.skip("Lean is installed here")
    assert main(["smoke", "lean-retry"]) == 0
    out = capsys.readouterr().out
    assert "lean-retry" in out and "skipped: " in out and "Lean not found" in out


@pytest.mark.slow
def test_opsd_presets_run_and_store_student_rollouts_with_the_teacher_prompt(tiny_model: Path, pidistill_home: Path):
    assert main(["smoke", "opsd-null", "opsd-dynamic-curriculum"]) == 0
    landed = _arms_landed("")
    assert landed["opsd-null"] == {"no-train", "opsd"}
    rollouts = query("""select r.experiment, a.arm, a.round, a.pi_kind, a.prompt, a.teacher_prompt, a.pi_text
                        from attempts a join runs r using (run_id) where a.phase = 'opsd'""")
    assert set(rollouts.experiment) == {"opsd-null", "opsd-dynamic-curriculum"}
    assert (rollouts.pi_kind == "reference_solution").all()
    assert all(pi in t and pi not in p for p, t, pi in zip(rollouts.prompt, rollouts.teacher_prompt, rollouts.pi_text))
    provenance = query("""select count(*) n, count(sampler_seed) seeds, count(sample_key) sample_keys,
                                 count(*) filter (where len(completion_token_ids) = n_completion_tokens) ids,
                                 count(policy_digest) digests
                          from attempts where phase = 'opsd'""").iloc[0]
    assert provenance.n == provenance.seeds == provenance.sample_keys == provenance.ids > 0 == provenance.digests
    tr = query("""select r.experiment, t.arm, t.method, t.steps from trainings t join runs r using (run_id)
                  where t.method = 'opsd'""")
    assert (tr.steps > 0).all() and set(tr.experiment) == {"opsd-null", "opsd-dynamic-curriculum"}


@pytest.mark.slow
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


def test_a_fan_and_a_fixed_chain_spend_k_per_failed_first_try_with_a_real_sampler(
    tiny_model: Path, pidistill_home: Path
):
    """The demo at micro scale with K = 3 as a fan and as a fixed chain: the retry and double-sample arms spend
    exactly 3 follow-ups on every failed first try (the report's follow-up budget); a fan's are level 1,
    sample_idx 0..2, each answering its first try."""
    from analysis.report import follow_up_budget

    for run_id, shape in (("fan", "retry.shape=fan"), ("fixed", "retry.budget=fixed")):
        argv = ["run", "demo", "--smoke", "--run-id", run_id, "--set", "rounds=1", "--set", "retry.max_retries=3"]
        assert main([*argv, "--set", shape]) == 0
        budget = follow_up_budget(run_id).set_index("arm")
        for arm in ("retry", "double-sample"):
            assert budget.loc[arm, "fewest"] == budget.loc[arm, "most"] == 3, (run_id, budget)
    fan = query("""select f.attempt_idx, list(distinct f.sample_idx order by f.sample_idx) samples,
                          count(distinct f.parent_id) parents, bool_and(p.attempt_idx = 0) from_first_try
                   from attempts f join attempts p on p.run_id = f.run_id and p.attempt_id = f.parent_id
                   where f.run_id = 'fan' and f.phase = 'train' group by all""")
    assert fan.attempt_idx.tolist() == [1] and list(fan.samples[0]) == [0, 1, 2] and fan.from_first_try[0]
