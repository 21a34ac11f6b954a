"""Config tree: presets validate, overrides apply, bad configs fail with one message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from experiments.config import ConfigError, ExperimentConfig, load_config, parse_overrides, preset_names
from tasks.runs import PreflightError, preflight


def _pop_dotted(data: dict, key: str):
    *sections, last = key.split(".")
    for section in sections:
        data = data[section]
    return data.pop(last)


def test_every_preset_validates_and_each_arm_changes_only_what_it_sets():
    """load_config already resolves every arm (ExperimentConfig._arms_resolve): what is left to check
    is the effective config of each arm, which differs from the experiment's exactly in the arm's `set`."""
    assert "demo" in preset_names()
    shorthand = {"model": "model.name_or_path", "domain": "domain.name"}
    for name in preset_names():
        cfg = load_config(name)
        for arm in cfg.arms:
            effective, experiment = cfg.for_arm(arm.name).model_dump(), cfg.model_dump()
            assert effective.pop("arms") == [{"name": arm.name, "set": {}}], name
            experiment.pop("arms")
            for key, value in arm.set.items():
                key = shorthand.get(key, key) if isinstance(value, str) else key
                assert _pop_dotted(effective, key) == value, f"{name} arm {arm.name}: {key}"
                _pop_dotted(experiment, key)
            assert effective == experiment, f"{name} arm {arm.name} changes more than its set"


def test_every_field_has_a_description():
    def walk(model_cls, path=""):
        for name, field in model_cls.model_fields.items():
            assert field.description, f"{path}{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, f"{path}{name}.")

    walk(ExperimentConfig)


def test_overrides_parse_yaml_values_and_shorthands():
    assert parse_overrides(["train.lr=1e-4", "seeds=[1, 2]", "filter.frontier=true"]) == [
        ("train.lr", 1e-4),
        ("seeds", [1, 2]),
        ("filter.frontier", True),
    ]
    cfg = load_config("demo", ["model=some/model", "domain=gsm8k", "train.lr=0.01"])
    assert cfg.model.name_or_path == "some/model"
    assert cfg.domain.name == "gsm8k"
    assert cfg.domain.train_size == load_config("demo").domain.train_size  # the rest of the section is kept
    assert cfg.train.lr == 0.01


def test_arm_overrides_give_effective_configs():
    cfg = load_config("demo")
    assert cfg.for_arm("no-retry").retry.max_retries == 0
    assert cfg.for_arm("double-sample").retry.strategy == "resample"
    assert cfg.for_arm("retry").retry.max_retries == 3 and cfg.for_arm("retry").retry.strategy == "retry"
    assert cfg.for_arm("retry").arms[0].name == "retry" and cfg.for_arm("retry").arms[0].set == {}
    with pytest.raises(KeyError):
        cfg.for_arm("nope")


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["trian.lr=1"], "trian"),
        (["train.lr=abc"], "train.lr"),
        (["train.lrr=1"], "train.lrr"),
        (["sampling.n=0"], "sampling.n"),
        (["domain.name=nope"], "domain.name"),
        (["arms=[{name: a, set: {train.lrr: 1}}]"], "arms[0].set: train.lrr"),
        (["arms=[{name: a}, {name: a}]"], "unique"),
        (["train=5"], "train"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        load_config("demo", overrides)
    assert field in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_set_syntax():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config("demo", ["train.lr"])


def test_unknown_preset_and_missing_file():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config("nope")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("missing.yaml")


def test_a_misspelt_preset_or_key_gets_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown preset 'star-try-agian' \(did you mean 'star-try-again'\?\)"):
        load_config("star-try-agian")
    with pytest.raises(ConfigError, match=r"sampling.temprature: unknown key \(did you mean 'temperature'"):
        load_config("demo", ["sampling.temprature=1"])
    with pytest.raises(ConfigError, match=r"train.opsd.tecaher: unknown key \(did you mean 'teacher'\?\)"):
        load_config("demo", ["train.opsd.tecaher=live"])
    with pytest.raises(ConfigError, match=r"train.zzz: unknown key \(got 1\)"):  # nothing close: no guess
        load_config("demo", ["train.zzz=1"])


def test_an_empty_yaml_is_an_error_not_the_default_experiment(tmp_path, capsys, pidistill_home: Path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(str(empty))
    assert main(["run", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the file is empty" in err[0]
    assert not pidistill_home.exists() or not any(pidistill_home.iterdir())


def test_list_says_what_each_preset_needs_at_full_scale(capsys):
    assert main(["list"]) == 0
    out = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "needs:" in line}
    assert out["demo"].endswith("needs: CPU")
    assert "GPU (8B)" in out["full-ft-vs-lora"] and "GPU (1.7B, 4B)" in out["cross-model-retry"]
    assert out["lean-retry"].endswith("Lean") and "hub download" in out["star-try-again"]
    assert set(out) == set(preset_names())


def test_missing_dataset_path_fails_preflight(tmp_path):
    cfg = load_config("demo", ["domain=gsm8k", f"domain.path={tmp_path}/nope.jsonl"])
    with pytest.raises(PreflightError, match="domain gsm8k: gsm8k data not found"):
        preflight(cfg)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "demo", "--set", "train.lr=abc"], "train.lr"),
        (["run", "demo", "--set", "domain=gsm8k", "--set", "domain.path=/nonexistent/gsm8k.jsonl"], "domain"),
        (["run", "demo", "--set", "bogus=1"], "bogus"),
    ],
)
def test_cli_bad_config_exits_2_and_writes_nothing(argv, message, pidistill_home: Path, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pidistill: config error:") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not pidistill_home.exists() or not any(pidistill_home.iterdir())


def test_yaml_file_config(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("name: mine\ndomain: arith\nrounds: 3\narms: [{name: x}]\n")
    cfg = load_config(str(f))
    assert (cfg.name, cfg.rounds, cfg.domain.name) == ("mine", 3, "arith")
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(str(f))


def test_config_hash_is_stable_and_sensitive():
    a, b = load_config("demo"), load_config("demo")
    assert a.config_hash() == b.config_hash()
    assert load_config("demo", ["train.lr=0.1"]).config_hash() != a.config_hash()


def test_fields_added_later_keep_the_hash_at_their_defaults_and_move_it_when_set():
    """The first-try pass rates and the PI-copy filter came after runs were stored: a config that leaves them
    at their defaults keeps its hash and resumes its runs; one that sets them away from it hashes apart."""
    base = load_config("demo", ["retry.budget=until_pass"])  # the demo preset itself sets a fixed budget
    for dotted in ExperimentConfig.ADDED_LATER:
        section, name = dotted.split(".")
        assert name in type(getattr(base, section)).model_fields  # no misspelt entry
        assert f'"{name}"' not in base.canonical_json()
    assert '"budget":"fixed"' in load_config("demo").canonical_json()
    changed = {
        "filter.frontier_pass_rate_from=all_attempts": '"frontier_pass_rate_from":"all_attempts"',
        "curriculum.pass_rate_from=all_attempts": '"pass_rate_from":"all_attempts"',
        "filter.reject_pi_copies=false": '"reject_pi_copies":false',
    }
    for override, stored in changed.items():
        cfg = load_config("demo", [override])
        assert stored in cfg.canonical_json() and cfg.config_hash() != base.config_hash()
    explicit = load_config(
        "demo",
        [
            "filter.frontier_pass_rate_from=first_tries",
            "filter.reject_pi_copies=true",
            "domain.decontaminate=true",
            "retry.budget=until_pass",
            "retry.shape=chain",
        ],
    )
    assert explicit.config_hash() == base.config_hash()


def test_prefect_yaml_demo_deployment_matches_the_preset():
    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parent.parent / "prefect.yaml").read_text())
    demo = next(d for d in spec["deployments"] if d["name"] == "demo")
    assert demo["entrypoint"] == "flows/experiment.py:experiment_flow"
    deployed = ExperimentConfig.model_validate(demo["parameters"]["config"])
    preset = load_config("demo")
    skip = {"description", "seed_result"}
    assert deployed.model_dump(exclude=skip) == preset.model_dump(exclude=skip)


def test_lean_config_validates_but_fails_fast_without_lean(monkeypatch, capsys, pidistill_home: Path):
    import shutil

    if shutil.which("lake"):
        pytest.skip("Lean is installed here: the fail-fast path cannot be shown")
    monkeypatch.delenv("PIDISTILL_LEAN_PROJECT", raising=False)
    cfg = load_config("demo", ["domain=minif2f"])  # validates
    with pytest.raises(PreflightError, match="Lean not found, see pidistill doctor"):
        preflight(cfg)
    assert main(["run", "demo", "--set", "domain=minif2f"]) == 2
    assert "Lean not found, see pidistill doctor" in capsys.readouterr().err
    assert not pidistill_home.exists() or not any(pidistill_home.iterdir())


def test_prefect_yaml_is_generated_from_the_presets():
    """prefect.yaml == `python -m flows.deployments` output: rerun it with --write after changing a preset."""
    from flows.deployments import PREFECT_YAML, render

    assert PREFECT_YAML.read_text() == render(), "prefect.yaml is stale: run `python -m flows.deployments --write`"


def test_every_deployment_validates_to_its_preset_with_the_same_config_hash():
    """A run from the UI's unedited form is the preset's run: same config, same hash (nightly and reports
    compare by it); the smoke variants equal `--smoke` with their `--set`s."""
    import yaml

    from experiments.sweep import sweep_names
    from flows.deployments import NIGHTLY_PRESETS, SMOKE_PRESETS

    spec = yaml.safe_load((Path(__file__).resolve().parent.parent / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    sweeps = {f"sweep-{s}" for s in sweep_names()}
    assert set(by_name) == set(preset_names()) | {f"smoke-{p}" for p in SMOKE_PRESETS} | sweeps | {"nightly"}
    for name, dep in by_name.items():
        assert dep["work_pool"] == {"name": "pidistill"}, name
        if name in sweeps:
            assert dep["entrypoint"] == "flows/sweep.py:sweep_flow" and dep["parameters"] == {"name": name[6:]}
        if name == "nightly" or name in sweeps:
            continue
        assert dep["entrypoint"] == "flows/experiment.py:experiment_flow"
        preset = name.removeprefix("smoke-")
        smoke = name.startswith("smoke-")
        expected = load_config(preset, SMOKE_PRESETS[preset] if smoke else [], smoke_scale=smoke)
        assert ExperimentConfig.model_validate(dep["parameters"]["config"]).config_hash() == expected.config_hash(), (
            name
        )
    nightly = by_name["nightly"]
    assert nightly["entrypoint"] == "flows/nightly.py:nightly_flow"
    assert nightly["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": True}]
    assert nightly["parameters"]["presets"] == NIGHTLY_PRESETS and set(NIGHTLY_PRESETS) <= set(preset_names())
    assert spec["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PIDISTILL_REPO }}"}}]


def test_the_flows_smoke_switch_runs_what_pidistill_run_smoke_runs(monkeypatch):
    """The UI's smoke switch (experiment_flow's `smoke`) scales the preset exactly as `--smoke` does; a config
    that `--smoke --set model=...` scaled already keeps its model (the label alone scales nothing)."""
    from contextlib import contextmanager

    import flows.experiment as experiment

    seen = []

    class Stop(Exception):
        pass

    @contextmanager
    def capture(config, run_id):
        seen.append(config)
        raise Stop
        yield

    monkeypatch.setattr(experiment, "run_lifecycle", capture)
    with pytest.raises(Stop):
        experiment.experiment_flow.fn(load_config("star-try-again"), run_id="x", smoke=True)
    cli = load_config("star-try-again", smoke_scale=True)
    assert seen[-1] == cli and seen[-1].config_hash() == cli.config_hash()
    own_model = load_config("star-try-again", ["model=smollm2-135m"], smoke_scale=True)
    with pytest.raises(Stop):
        experiment.experiment_flow.fn(own_model, run_id="x")
    assert seen[-1].model.name_or_path == "smollm2-135m" and seen[-1].smoke


def test_smoke_scales_sizes_but_not_the_learning_rate_of_a_model_it_did_not_pick():
    """Issue 16: `--smoke --set model=X` trained X at the tiny model's lr 3e-4 (SmolLM2 collapsed)."""
    preset = load_config("star-try-again")
    tiny = load_config("star-try-again", smoke_scale=True)
    assert tiny.train.lr == 3e-4 and tiny.domain.train_size == 16
    mine = load_config("star-try-again", ["model=smollm2-135m"], smoke_scale=True)
    assert mine.train.lr == preset.train.lr and mine.domain.train_size == 16
    assert load_config("star-try-again", ["model=smollm2-135m", "train.lr=1e-5"], smoke_scale=True).train.lr == 1e-5


def test_training_length_fits_what_the_sampler_may_write():
    """Issue 16: Lean presets sampled 1024 new tokens into a 512-token training window (the answer, last, was cut).
    The default now cuts nothing; a window that cannot hold a full completion fails in preflight."""
    for name in preset_names():
        cfg = load_config(name)
        assert cfg.train.max_length is None or cfg.train.max_length > cfg.sampling.max_new_tokens, name
    with pytest.raises(PreflightError, match=r"train.max_length=512 does not fit a prompt plus sampling.max_new"):
        preflight(load_config("demo", ["train.max_length=512", "sampling.max_new_tokens=1024"]))


def test_vllm_engine_settings_go_to_the_engine_only_when_given():
    assert load_config("demo").sampling.engine_options() == {}  # vLLM's own defaults
    cfg = load_config(
        "demo",
        ["sampling.tensor_parallel_size=4", "sampling.gpu_memory_utilization=0.6", "sampling.max_model_len=4096"],
    )
    assert cfg.sampling.engine_options() == {
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.6,
        "max_model_len": 4096,
    }
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        load_config("demo", ["sampling.gpu_memory_utilization=1.5"])
