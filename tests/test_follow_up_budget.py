"""The double-sample control's budget (fast, no model): the round flow's try-again loop run with a fake
sampler and a fake verifier under which retries pass far more often than fresh samples, then the report's
follow-up budget on the rows it wrote.

With `retry.budget: fixed` or `retry.shape: fan` the retry and resample arms spend exactly K follow-ups on
every failed first try, for K = 1, 2, 3; with `until_pass` (a chain stopping at its first pass) they drift
apart once K > 1, which is what the audit found."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from analysis.report import build_report, follow_up_budget, to_markdown
from domains import get_domain
from domains.base import Verdict
from experiments.config import ExperimentConfig, load_config
from storage.catalog import query
from storage.schema import Attempt
from storage.writer import write_rows
from tasks.filter import decide

PROBLEMS = get_domain("arith").load("train", limit=24)
ORIGINAL = {p.problem_id: get_domain("arith").prompt(p) for p in PROBLEMS}
# Pass rates of the fake verifier: a retry prompt helps a lot, a fresh sample of the original prompt little.
PASS_RATE = {"first": 0.3, "retry": 0.8, "resample": 0.2}


class _Sampler:
    name, model_ref, tokenizer, policy_digest = "fake", "m", None, None

    def generate(self, prompts, *, n=1, seed=0, **_):
        from models.sampling.base import Completion

        return [[Completion(f" {seed}.{i}.{j}", 4, 2, "stop") for j in range(n)] for i in range(len(prompts))]


def _verdict(a: Attempt) -> Verdict:
    """Pass or fail by a uniform number read off the attempt id, at the rate of what the attempt was."""
    kind = "first" if a.attempt_idx == 0 else "resample" if a.prompt == ORIGINAL[a.problem_id] else "retry"
    passed = int(a.attempt_id[:8], 16) / 16**8 < PASS_RATE[kind]
    return Verdict("pass" if passed else "fail", passed, float(passed))


class _Filtered(Exception):
    """Raised where the round would filter: the loop is done, its attempts are `args[0]`."""


def _round(monkeypatch, cfg: ExperimentConfig, arm: str) -> list[Attempt]:
    """One round's training attempts of `arm`, through `flows.round.round_flow` and the real `sample` task
    (fake sampler, fake verifier), decided as the filter decides them."""
    import flows.round as round_module
    import tasks.sample as sample_module

    monkeypatch.setattr(sample_module, "make_sampler", lambda cfg, ref: _Sampler())
    monkeypatch.setattr(round_module, "select_problems", lambda cfg, key: PROBLEMS)

    def sample_and_verify(cfg, key, problems, level, ref, requests):
        return [a.with_verdict(_verdict(a)) for a in sample_module.sample.fn(cfg, key, ref, requests)]

    def resumable(key, name, compute, *args):
        if name == "filter":
            raise _Filtered(args[3].unquote())
        raise AssertionError(f"the round reached {name} before filter")

    monkeypatch.setattr(round_module, "sample_and_verify", sample_and_verify)
    monkeypatch.setattr(round_module, "resumable", resumable)
    effective = cfg.for_arm(arm)
    with pytest.raises(_Filtered) as done:
        round_module.round_flow.fn(effective, run_id="budget", arm=arm, seed=0, round=1, model_ref="m", base_ref="m")
    return decide(effective, done.value.args[0])


def _per_failed_first_try(cfg: ExperimentConfig, attempts: list[Attempt]) -> list[int]:
    """Follow-ups of each failed first try (verdict-rejected, verifier errors apart), traced up parent_id."""
    by_id = {a.attempt_id: a for a in attempts}

    def first_try(a: Attempt) -> str:
        while a.parent_id is not None:
            a = by_id[a.parent_id]
        return a.attempt_id

    failed = [a for a in attempts if a.attempt_idx == 0 and a.reject_reason == "failed"]
    counts = dict.fromkeys((a.attempt_id for a in failed), 0)
    for a in attempts:
        if a.attempt_idx > 0:
            counts[first_try(a)] += 1
    return [counts[a.attempt_id] for a in failed]


def _config(k: int, *settings: str) -> ExperimentConfig:
    return load_config("demo", [f"retry.max_retries={k}", *settings])


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("settings", [("retry.budget=fixed",), ("retry.shape=fan",)], ids=["fixed-chain", "fan"])
def test_retry_and_resample_spend_exactly_k_per_failed_first_try(monkeypatch, pidistill_home: Path, k, settings):
    cfg = _config(k, *settings)
    spent = {arm: _per_failed_first_try(cfg, _round(monkeypatch, cfg, arm)) for arm in ("retry", "double-sample")}
    for arm, counts in spent.items():
        assert counts and set(counts) == {k}, (arm, counts)


def test_a_fixed_chain_keeps_each_follow_up_answering_a_failed_attempt(monkeypatch, pidistill_home: Path):
    """Levels 1..K; every parent is a failed attempt of the same problem; a fan's parents are the first tries."""
    cfg = _config(3, "retry.budget=fixed")
    rows = _round(monkeypatch, cfg, "retry")
    by_id = {a.attempt_id: a for a in rows}
    follow = [a for a in rows if a.attempt_idx > 0]
    assert {a.attempt_idx for a in follow} == {1, 2, 3} and {a.sample_idx for a in follow} == {0}
    assert all(not by_id[a.parent_id].passed and by_id[a.parent_id].problem_id == a.problem_id for a in follow)
    assert any(by_id[a.parent_id].attempt_idx < a.attempt_idx - 1 for a in follow)  # asked again after a pass
    fan = _round(monkeypatch, _config(3, "retry.shape=fan"), "retry")
    by_id = {a.attempt_id: a for a in fan}
    follow = [a for a in fan if a.attempt_idx > 0]
    assert {a.attempt_idx for a in follow} == {1} and {a.sample_idx for a in follow} == {0, 1, 2}
    assert all(by_id[a.parent_id].attempt_idx == 0 for a in follow)


def test_until_pass_budgets_drift_apart_beyond_k_1(monkeypatch, pidistill_home: Path):
    """The finding: a chain that stops at its first pass spends less where follow-ups pass more often."""
    means = {}
    for k in (1, 3):
        cfg = _config(k, "retry.budget=until_pass")
        for arm in ("retry", "double-sample"):
            counts = _per_failed_first_try(cfg, _round(monkeypatch, cfg, arm))
            means[k, arm] = sum(counts) / len(counts)
    assert means[1, "retry"] == means[1, "double-sample"] == 1
    assert means[3, "retry"] < means[3, "double-sample"] - 0.5


def _write_run(home: Path, run_id: str, cfg: ExperimentConfig, attempts: dict[str, list[Attempt]]) -> None:
    from datetime import UTC, datetime

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    run = {
        "run_id": run_id,
        "experiment": cfg.name,
        "config_json": cfg.canonical_json(),
        "config_hash": cfg.config_hash(),
        "code_version": "c" * 40,
        "data_hash": "d",
        "started_at": t0,
        "finished_at": t0,
        "status": "completed",
        "error": None,
        "smoke": False,
    }
    write_rows(home / run_id / "runs" / "run.parquet", [run], "runs")
    evaluations = [
        {"run_id": run_id, "arm": arm, "seed": 0, "round": r, "problem_id": f"e{p}", "model_ref": "m", "n": 1}
        | {"n_pass": (p + r) % 2}
        for arm in attempts
        for r in (0, 1)
        for p in range(4)
    ]
    write_rows(home / run_id / "evaluations" / "all.parquet", evaluations, "evaluations")
    for arm, rows in attempts.items():
        write_rows(home / run_id / "attempts" / f"{arm}.parquet", rows, "attempts")


@pytest.mark.parametrize("settings", [("retry.budget=fixed",), ("retry.shape=fan",), ("retry.budget=until_pass",)])
def test_the_reports_follow_up_budget_counts_what_each_arm_spent(monkeypatch, pidistill_home: Path, settings):
    """follow_up_budget (and the docs/sql.md recipe) on the rows: per arm, the failed first tries, their
    follow-ups, and per failed first try the mean, fewest and most, as counted up parent_id in Python."""
    cfg = _config(3, *settings)
    attempts = {arm: _round(monkeypatch, cfg, arm) for arm in ("retry", "double-sample", "no-retry")}
    _write_run(pidistill_home, "budget", cfg, attempts)
    budget = follow_up_budget("budget").set_index("arm")
    for arm, rows in attempts.items():
        counts = _per_failed_first_try(cfg, rows)
        got = budget.loc[arm]
        assert (got.failed_first_tries, got.follow_ups) == (len(counts), sum(counts))
        assert (got.per_failed_first_try, got.fewest, got.most) == (sum(counts) / len(counts), min(counts), max(counts))
    matched = settings != ("retry.budget=until_pass",)
    assert bool(budget.loc["retry", "most"] == budget.loc["retry", "fewest"] == 3) is matched
    assert budget.loc["no-retry", "most"] == 0
    cookbook = (Path(__file__).resolve().parent.parent / "docs" / "sql.md").read_text()
    (recipe,) = [b for b in re.findall(r"```sql\n(.*?)```", cookbook, re.S) if "per_failed_first_try" in b]
    pd.testing.assert_frame_equal(query(recipe.replace("<run id>", "budget")), budget.reset_index(), check_dtype=False)
    md = to_markdown(build_report("budget", n_boot=50))
    assert "| arm | failed_first_tries | follow_ups | per_failed_first_try | fewest | most |" in md
    if matched:
        assert f"| retry | {len(_per_failed_first_try(cfg, attempts['retry']))} |" in md
