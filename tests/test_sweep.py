"""Design sweeps (experiments/sweep.py, flows/sweep.py, `pidistill sweep`): a spec's mistakes are named before
anything runs (fast); a micro sweep of the demo runs each setting once, reruns reuse them, and the table
holds the compared arm minus the reference with its interval and the examples per arm (slow: real runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from experiments.config import ConfigError
from experiments.sweep import describe, load_sweep, setting_config, setting_run_id

MICRO = {
    "domain.train_size": 8,
    "domain.eval_size": 10,
    "rounds": 1,
    "sampling.n": 2,
    "sampling.max_new_tokens": 24,
    "retry.max_retries": 1,
    "train.epochs": 1,
}


def _spec(tmp_path: Path, **changes) -> Path:
    spec = {
        "name": "micro",
        "preset": "demo",
        "seeds": [100, 101],
        "arms": ["no-retry", "retry"],
        "settings": [
            {"name": "a", "set": MICRO, "seeds": 2},
            {"name": "b", "set": MICRO | {"sampling.temperature": 1.2}, "seeds": 2},
        ],
    } | changes
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_shipped_demo_sweep_loads_and_every_setting_is_a_valid_config():
    spec = load_sweep("demo")
    assert (spec.reference, spec.compared) == ("no-retry", "retry")
    ids = set()
    for s in spec.settings:
        cfg = setting_config(spec, s)
        assert [a.name for a in cfg.arms] == ["no-retry", "retry"] and cfg.seeds == spec.seeds[: s.seeds]
        ids.add(setting_run_id(spec, s, cfg))
    assert len(ids) == len(spec.settings)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": [0, 100]}, r"seeds \[0\] are also the preset's own"),
        ({"arms": ["no-retry", "nope"]}, r"preset demo has no arms \['nope'\]"),
        ({"settings": [{"name": "a", "seeds": 3}]}, r"settings \['a'\] ask for more seeds than the sweep's 2"),
        ({"settings": [{"name": "a", "seeds": 2}, {"name": "a", "seeds": 2}]}, r"setting names repeat: \['a'\]"),
        ({"settings": [{"name": "a", "set": {"rounds": "many"}, "seeds": 2}]}, r"setting a: .*rounds"),
        ({"sedes": [1, 2]}, r"sedes"),
    ],
)
def test_a_bad_spec_is_named_before_anything_runs(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        spec = load_sweep(str(_spec(tmp_path, **changes)))
        [setting_config(spec, s) for s in spec.settings]


def test_the_base_comes_before_each_setting_and_the_setting_wins(tmp_path):
    spec = load_sweep(str(_spec(tmp_path, base={"rounds": 3, "eval.temperature": 0.5})))
    cfg = setting_config(spec, spec.settings[0])
    assert (cfg.rounds, cfg.eval.temperature) == (1, 0.5)


def test_an_unknown_only_is_one_line_before_prefect_starts(tmp_path, capsys, pidistill_home):
    from cli.main import main

    assert main(["sweep", str(_spec(tmp_path)), "--only", "c"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pidistill: config error: sweep micro has no settings ['c']; settings: ['a', 'b']"]
    assert not (pidistill_home / "sweeps").exists()


def test_an_unknown_sweep_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"no sweep 'nope'.*sweeps: \[.*'demo'"):
        load_sweep("nope")


def test_a_settings_run_id_follows_its_config(tmp_path):
    spec = load_sweep(str(_spec(tmp_path)))
    a, b = spec.settings
    assert setting_run_id(spec, a, setting_config(spec, a)).startswith("sweep-micro-a-")
    assert setting_run_id(spec, a, setting_config(spec, a)) != setting_run_id(spec, a, setting_config(spec, b))
    assert "sampling.temperature=1.2" in describe(b) and describe(b).endswith(", 2 seeds")


@pytest.mark.slow
def test_a_micro_sweep_runs_each_setting_once_and_tabulates_the_comparison(tmp_path, tiny_model, pidistill_home):
    from cli.main import main
    from storage.catalog import query

    path = str(_spec(tmp_path))
    assert main(["sweep", path, "--only", "a"]) == 0
    table = (pidistill_home / "sweeps" / "micro.md").read_text()
    assert "| setting | what it changes | min | base | Δ no-retry | Δ retry | retry − no-retry [95 % CI] |" in table
    rows = [line for line in table.splitlines() if line.startswith("| a |")]
    assert len(rows) == 1 and "no-retry" in rows[0] and "(0)" in rows[0]  # no-retry: no newly solved problems
    assert "| b |" not in table  # not run yet

    assert main(["sweep", path]) == 0  # a is reused, b runs
    runs = query("SELECT run_id, status FROM runs ORDER BY run_id")
    assert len(runs) == 2 and set(runs.status) == {"completed"}
    table = (pidistill_home / "sweeps" / "micro.md").read_text()
    assert "| a |" in table and "| b |" in table

    with pytest.raises(ValueError, match=r"no settings \['c'\]"):
        from flows.sweep import sweep_flow

        sweep_flow.fn(path, ["c"])
