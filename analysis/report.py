"""The report of a run: every number with its uncertainty and its lineage.

    >>> r = build_report("demo-20261126-111702-11d3")
    >>> print(format_table(r))          # the seed-style table, printed after every run
    >>> write_report(r)                 # <run>/report/report.md and a self-contained report.html

Numbers: per arm, pass@1 of the base model (round 0) and of the last round, Δpp
= last - base on the same seeds and problems with a 95 % two-way paired
bootstrap interval (seeds and problems resampled) and a bootstrap p-value;
each arm against the first arm (the reference) the same way; pass@1 by round;
unbiased pass@k by round, k the most samples per problem drawn in evaluation;
a sweep curve when the arms differ in one field (K, lr, rounds, ...); reject
reasons, the follow-up budget (follow-ups per failed first try, per arm: a
control matches the arm it controls only where these agree), compute, and
path diversity of correct training attempts; why each arm moved
(analysis.mechanism: examples from newly vs already solved problems, answer
format vs answer, held-out flips); the design's power (analysis.power: the
MDE under the run's own variance, vs base and vs the reference arm) and each
arm's reading of its Δ at that power ("inconclusive at this power" when its
interval holds 0). Point estimates equal the catalog's `summary` view
(tests check it).

`report_page` turns the numbers into a page (analysis.page: sections of paragraphs,
tables and plots), which the markdown and HTML templates render.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.diversity import diversity
from analysis.mechanism import acceptance_by_level, eval_flips, examples_by_problem, format_or_answer
from analysis.metrics import Estimate, paired_bootstrap, pass_at_k
from analysis.page import (
    Block,
    Image,
    Paragraph,
    Preformatted,
    ReportPage,
    Section,
    Span,
    code,
    render_html,
    render_markdown,
    strong,
    text,
)
from analysis.plots import report_plots
from analysis.power import (
    Power,
    components,
    design_line,
    mde,
    paired_differences,
    power_of,
    reading,
    seed_effects_by_arm,
)
from analysis.tables import Table, cell, interval_pp, p_text, signed_pp
from storage.catalog import query
from storage.home import home_dir


@dataclass(frozen=True)
class PassAtK:
    """pass@1 and unbiased pass@k of one arm and round; k is the run's (Report.k)."""

    round: int
    n: int  # the fewest samples drawn for one problem in this arm and round
    pass1: float
    pass_k: Estimate | None  # None when n < k: too few samples for pass@k
    seeds: int


@dataclass
class ArmResult:
    arm: str
    seeds: int
    rounds: int
    base_pass1: float
    final_pass1: float
    delta: Estimate  # final - base, paired
    vs_reference: Estimate | None  # final - reference arm's final, paired
    by_round: list[tuple[int, Estimate]]
    pass_at_k: list[PassAtK] = field(default_factory=list)  # by round; empty when k = 1
    reading: str = ""  # Δ's interval at this power: "inconclusive at this power (MDE x pp)", or "" (analysis.power)


@dataclass(frozen=True)
class RetryChain:
    """One accepted retry and what led to it: the problem, the failed first try, the PI shown, the retry."""

    arm: str
    problem_id: str
    prompt: str  # the original question
    failed: str  # the first try's completion
    feedback: str  # the verifier on it
    pi_kind: str
    retry_prompt: str  # what the model saw on its retry (prompt + PI)
    retry: str  # the accepted completion


@dataclass
class Report:
    run_id: str
    experiment: str
    seed_result: str
    lineage: dict[str, str]
    reference: str
    arms: list[ArmResult]
    sweep: tuple[str, list[tuple[Any, str]]] | None  # (field, [(value, arm)])
    rejects: pd.DataFrame
    compute: pd.DataFrame
    diversity: pd.DataFrame
    images: dict[str, bytes] = field(default_factory=dict)
    levels: pd.DataFrame = field(default_factory=pd.DataFrame)  # per arm and follow-up level: pass, acceptance
    sources: pd.DataFrame = field(default_factory=pd.DataFrame)  # per arm: examples from newly/already solved
    answers: pd.DataFrame = field(default_factory=pd.DataFrame)  # per arm and round: answered, pass1 when answered
    flips: pd.DataFrame = field(default_factory=pd.DataFrame)  # per arm: held-out pairs gained and lost
    budget: pd.DataFrame = field(default_factory=pd.DataFrame)  # per arm: follow-ups per failed first try
    arm_changes: dict[str, str] = field(default_factory=dict)  # arm -> what it sets, "key=value, ..."
    retry_chain: RetryChain | None = None  # one accepted retry with what led to it
    k: int = 1  # pass@k's k: the most samples per problem drawn in evaluation (1: pass@k is pass@1)
    power: Power | None = None  # the run's design (most seeds x problems of an arm) under its own variance
    power_vs_reference: Power | None = None  # the same for the arms' differences from the reference arm


def _matrix(ev: pd.DataFrame, arm: str, rnd: int) -> pd.DataFrame:
    """seeds x problems of pass rates (n_pass / n) for one arm and round."""
    sub = ev[(ev.arm == arm) & (ev["round"] == rnd)]
    return sub.pivot_table(index="seed", columns="problem_id", values="rate", aggfunc="mean").sort_index()


def _pass_at_k(ev: pd.DataFrame, arm: str, rnd: int, k: int, n_boot: int) -> PassAtK:
    sub = ev[(ev.arm == arm) & (ev["round"] == rnd)]
    m = sub.pivot_table(index="seed", columns="problem_id", values="pass_k", aggfunc="mean")
    n = int(sub.n.min())
    est = paired_bootstrap(m.to_numpy(), n_boot=n_boot, seed=rnd) if n >= k else None
    return PassAtK(rnd, n, float(_matrix(ev, arm, rnd).to_numpy().mean()), est, int(sub.seed.nunique()))


def _comparable(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Two arms' seeds x problems share a seed and a problem (arms on different domains share none)."""
    return not (a.index.intersection(b.index).empty or a.columns.intersection(b.columns).empty)


def arm_domains(config: dict) -> dict[str, str]:
    """arm -> the domain it ran on, from a stored config: the config's, or the arm's own (`set` names it as
    `domain: X`, `domain: {...}` or `domain.name: X`, as experiments.config.for_arm applies them)."""
    top = config.get("domain", {}).get("name", "arith")
    out = {}
    for arm in config.get("arms", []):
        overrides = arm.get("set") or {}
        name = overrides.get("domain.name", overrides.get("domain", top))
        out[arm["name"]] = name.get("name", "arith") if isinstance(name, dict) else name
    return out


def _paired(a: pd.DataFrame, b: pd.DataFrame, seed: int) -> Estimate:
    seeds = a.index.intersection(b.index)
    problems = a.columns.intersection(b.columns)
    return paired_bootstrap((a.loc[seeds, problems] - b.loc[seeds, problems]).to_numpy(), seed=seed)


def _sweep(config: dict) -> tuple[str, list[tuple[Any, str]]] | None:
    """The one field every arm sets to a different value, if the arms form a sweep."""
    arms = config.get("arms", [])
    keys = [set(a.get("set", {})) for a in arms]
    if len(arms) < 3 or not keys[0] or any(k != keys[0] for k in keys) or len(keys[0]) != 1:
        return None
    (name,) = keys[0]
    values = [a["set"][name] for a in arms]
    if len(set(map(json.dumps, values))) != len(values) or not all(isinstance(v, (int, float)) for v in values):
        return None
    return name, sorted(zip(values, (a["name"] for a in arms)))


class NoResults(KeyError):
    """The run exists but has nothing to report yet (it failed or is still running before its first evaluation)."""

    def __str__(self) -> str:
        return str(self.args[0])


def build_report(run_id: str, home: Path | None = None, n_boot: int = 2000) -> Report:
    params = {"run_id": run_id}
    runs = query("SELECT * FROM runs WHERE run_id = $run_id", home, params)
    if runs.empty:
        raise KeyError(f"no run {run_id!r} under {home or home_dir()}")
    run = runs.iloc[0]
    config = json.loads(run.config_json)
    ev = query("SELECT arm, seed, round, problem_id, n, n_pass FROM evaluations WHERE run_id = $run_id", home, params)
    if ev.empty:
        why = f": {run.error}" if run.status == "failed" and run.error else ""
        raise NoResults(f"run {run_id!r} is {run.status} and has no evaluation yet{why}")
    ev["rate"] = ev.n_pass / ev.n
    k = int(ev.n.max())
    ev["pass_k"] = [pass_at_k(n, c, k) if n >= k else np.nan for n, c in zip(ev.n.astype(int), ev.n_pass.astype(int))]
    order = [a["name"] for a in config["arms"] if a["name"] in set(ev.arm)]
    reference = order[0]
    last = {arm: int(ev[ev.arm == arm]["round"].max()) for arm in order}
    finals = {arm: _matrix(ev, arm, last[arm]) for arm in order}
    arms = []
    for i, arm in enumerate(order):
        base = _matrix(ev, arm, 0)
        rounds = sorted(ev[ev.arm == arm]["round"].unique())
        arms.append(
            ArmResult(
                arm=arm,
                seeds=len(finals[arm].index),
                rounds=last[arm],
                base_pass1=float(base.to_numpy().mean()),
                final_pass1=float(finals[arm].to_numpy().mean()),
                delta=_paired(finals[arm], base, seed=i),
                vs_reference=None
                if arm == reference or not _comparable(finals[arm], finals[reference])
                else _paired(finals[arm], finals[reference], seed=100 + i),
                by_round=[
                    (int(r), paired_bootstrap(_matrix(ev, arm, r).to_numpy(), n_boot=n_boot, seed=r)) for r in rounds
                ],
                pass_at_k=[_pass_at_k(ev, arm, int(r), k, n_boot) for r in rounds] if k > 1 else [],
            )
        )
    power = _power(ev, arms)
    power_vs_reference = _power_vs_reference(ev, arms, reference)
    _read(arms, power, config.get("seed_result", ""))
    report = Report(
        run_id=run_id,
        experiment=run.experiment,
        seed_result=config.get("seed_result", ""),
        lineage={col: str(run[col]) for col in ("config_hash", "code_version", "data_hash", "status")},
        reference=reference,
        arms=arms,
        sweep=_sweep(config),
        rejects=query(
            """SELECT arm, CASE WHEN coalesce(attempt_idx, 0) = 0 THEN 'first try' ELSE 'retry' END AS try,
                      coalesce(reject_reason, 'accepted') AS outcome, count(*) AS attempts
               FROM attempts WHERE run_id = $run_id AND phase = 'train' GROUP BY ALL ORDER BY arm, try, outcome""",
            home,
            params,
        ),
        levels=acceptance_by_level(run_id, home),
        sources=examples_by_problem(run_id, home),
        answers=format_or_answer(run_id, home),
        flips=eval_flips(run_id, home),
        budget=follow_up_budget(run_id, home),
        arm_changes={
            a["name"]: ", ".join(f"{k}={json.dumps(v)}" for k, v in a.get("set", {}).items()) or "(the config as is)"
            for a in config["arms"]
        },
        retry_chain=_retry_chain(run_id, home),
        compute=query("SELECT * EXCLUDE (run_id) FROM compute WHERE run_id = $run_id ORDER BY arm", home, params),
        diversity=_diversity(run_id, arm_domains(config), home),
        k=k,
        power=power,
        power_vs_reference=power_vs_reference,
    )
    report.images = report_plots(report)
    return report


def _power(ev: pd.DataFrame, arms: list[ArmResult]) -> Power | None:
    """The run's design (the most seeds x problems of an arm) under the variance of its own paired differences
    (vs base); None before any arm has a trained round on two or more problems to measure."""
    try:
        measured = components(paired_differences(ev), "this run")
    except ValueError:
        return None
    return power_of(measured, max(a.delta.n_seeds for a in arms), max(a.delta.n_problems for a in arms))


def _power_vs_reference(ev: pd.DataFrame, arms: list[ArmResult], reference: str) -> Power | None:
    """The design's power for `vs <reference>`: the variance of the arms' last rounds minus the reference's;
    None when no arm is compared with it."""
    compared = [a.vs_reference for a in arms if a.vs_reference is not None]
    if not compared:
        return None
    try:
        measured = components(paired_differences(ev, versus=reference), "this run")
    except ValueError:
        return None
    return power_of(measured, max(e.n_seeds for e in compared), max(e.n_problems for e in compared), f"vs {reference}")


def _read(arms: list[ArmResult], power: Power | None, seed_result: str) -> None:
    """Each arm's `reading` of its Δ at its own design's MDE, against the sprint's result when that names the arm."""
    expected = seed_effects_by_arm(seed_result, [a.arm for a in arms])
    for a in arms:
        if power is not None:
            arm_mde = mde(power.components, a.delta.n_seeds, a.delta.n_problems)
            a.reading = reading(a.delta.low, a.delta.high, arm_mde, expected.get(a.arm))


# The verdict's reject reasons of an attempt that gets follow-ups (tasks/filter.py verdict_reason; not
# verifier_error: a verifier error is not retried, tasks/follow_ups.py failed).
FAILED_REASONS = ("failed", "no_answer", "unclosed_think", "timeout", "below_threshold")

FOLLOW_UP_BUDGET_SQL = f"""
WITH RECURSIVE t AS (
    SELECT arm, attempt_id, parent_id, coalesce(attempt_idx, 0) AS attempt_idx, status, reject_reason
    FROM attempts WHERE run_id = $run_id AND phase = 'train'
), lineage(first_id, attempt_id) AS (
    SELECT attempt_id, attempt_id FROM t WHERE attempt_idx = 0
    UNION ALL
    SELECT l.first_id, t.attempt_id FROM t JOIN lineage l ON t.parent_id = l.attempt_id
), per_failure AS (
    SELECT f.arm, f.attempt_id, count(l.attempt_id) AS follow_ups
    FROM t f LEFT JOIN lineage l ON l.first_id = f.attempt_id AND l.attempt_id <> f.attempt_id
    WHERE f.attempt_idx = 0 AND f.status <> 'error' AND f.reject_reason IN ({", ".join(f"'{r}'" for r in FAILED_REASONS)})
    GROUP BY ALL
)
SELECT arm, count(*) AS failed_first_tries, sum(follow_ups)::BIGINT AS follow_ups,
       avg(follow_ups) AS per_failed_first_try, min(follow_ups) AS fewest, max(follow_ups) AS most
FROM per_failure GROUP BY arm ORDER BY arm
"""


def follow_up_budget(run_id: str, home: Path | None = None) -> pd.DataFrame:
    """Per arm, over all seeds and rounds: the failed first tries of the train phase (rejected by their verdict;
    verifier errors are not followed up), the follow-up samples they got (each traced back to its first try
    through parent_id, whatever the chain's length or the fan's width) and follow-ups per failed first try: the
    mean, the fewest and the most. A double-sample control spends what the retry arm it controls spends when
    these agree; with `retry.budget: fixed` or `retry.shape: fan` each is exactly K."""
    return query(FOLLOW_UP_BUDGET_SQL, home, {"run_id": run_id})


def _retry_chain(run_id: str, home: Path | None) -> RetryChain | None:
    """The first accepted retry (by arm, seed, round, problem) traced back to its failed first try; a retry that
    saw something new is preferred to a double-sample control's second try (the same prompt again)."""
    rows = query(
        """SELECT r.arm, r.problem_id, f.prompt, f.completion AS failed, coalesce(f.feedback, '') AS feedback,
                  coalesce(r.pi_kind, 'none') AS pi_kind, r.prompt AS retry_prompt, r.completion AS retry
           FROM attempts r JOIN attempts f ON f.run_id = r.run_id AND f.attempt_id = r.parent_id
           WHERE r.run_id = $run_id AND r.phase = 'train' AND r.accepted AND r.attempt_idx = 1
           ORDER BY r.prompt = f.prompt, r.arm, r.seed, r.round, r.problem_id, r.attempt_id LIMIT 1""",
        home,
        {"run_id": run_id},
    )
    return None if rows.empty else RetryChain(**rows.iloc[0].to_dict())


DIVERSITY_COLUMNS = ["arm", "domain", "round", "problems_solved", "distinct_per_problem", "mean_edit_distance"]


def _diversity(run_id: str, domains: dict[str, str], home: Path | None) -> pd.DataFrame:
    """Per arm and round: each arm's correct training attempts normalised as its own domain's solutions."""
    rows = query(
        """SELECT arm, round, problem_id, list(completion) AS completions FROM attempts
                    WHERE run_id = $run_id AND phase = 'train' AND passed GROUP BY ALL""",
        home,
        {"run_id": run_id},
    )
    out = []
    for (arm, rnd), group in rows.groupby(["arm", "round"]):
        stats = [diversity(domains[arm], list(c)) for c in group.completions]
        out.append(
            {
                "arm": arm,
                "domain": domains[arm],
                "round": int(rnd),
                "problems_solved": len(stats),
                "distinct_per_problem": float(np.mean([s["distinct"] for s in stats])),
                "mean_edit_distance": float(np.mean([s["mean_edit_distance"] for s in stats])),
            }
        )
    return pd.DataFrame(out, columns=DIVERSITY_COLUMNS)


def table_rows(report: Report) -> list[dict]:
    """The seed-style table as records (the flow's return value and the Prefect table artifact): numbers stay
    numbers (Δpp to 2 decimals, p to 4); the interval is text, its ends in the `arm_results` table."""
    return [
        {
            "experiment": report.experiment,
            "arm": a.arm,
            "delta_pp": round(a.delta.mean * 100, 2),
            "ci95_pp": interval_pp(a.delta.low, a.delta.high),
            "p_value": round(a.delta.p_value, 4),
            "reading": a.reading,
            "vs_" + report.reference: "" if a.vs_reference is None else a.vs_reference.pp(),
            "base_pass1": round(a.base_pass1, 4),
            "final_pass1": round(a.final_pass1, 4),
            "seeds": a.seeds,
            "rounds": a.rounds,
            "run_id": report.run_id,
            **report.lineage,
        }
        for a in report.arms
    ]


def arm_result_rows(report: Report, created_at: datetime | None = None) -> list[dict]:
    """`arm_results` rows: each arm's Δpp vs base and vs the reference arm, with 95 % intervals, in pp."""
    created_at = created_at or datetime.now(UTC)
    rows = []
    for a in report.arms:
        vs = a.vs_reference
        rows.append(
            {
                "run_id": report.run_id,
                "arm": a.arm,
                "delta_pp": a.delta.mean * 100,
                "ci_low_pp": a.delta.low * 100,
                "ci_high_pp": a.delta.high * 100,
                "p_value": a.delta.p_value,
                "reference_arm": report.reference,
                "vs_reference_pp": None if vs is None else vs.mean * 100,
                "vs_reference_ci_low_pp": None if vs is None else vs.low * 100,
                "vs_reference_ci_high_pp": None if vs is None else vs.high * 100,
                "vs_reference_p_value": None if vs is None else vs.p_value,
                "created_at": created_at,
            }
        )
    return rows


def format_table(report: Report) -> str:
    """The terminal table: Δpp with its 95 % interval's ends, p, vs the reference arm, pass@1, seeds, rounds."""
    ref = f"vs {report.reference}"
    lines = [
        f"{'arm':<20} {'Δpp vs base [95% CI]':>22} {'p':>6} {ref:>22} {'base':>6} {'final':>6} {'seeds':>5} {'rounds':>6}"
    ]
    for a in report.arms:
        vs = "-" if a.vs_reference is None else a.vs_reference.pp()
        lines.append(
            f"{a.arm:<20} {a.delta.pp():>22} {p_text(a.delta.p_value):>6} {vs:>22} "
            f"{a.base_pass1:>6.3f} {a.final_pass1:>6.3f} {a.seeds:>5} {a.rounds:>6}"
        )
    if report.power is not None:
        lines.append(f"power: {design_line(report.power)}")
        unclear = [a.arm for a in report.arms if a.reading.startswith("inconclusive")]
        if unclear:
            lines.append(f"inconclusive at this power (95 % interval holds 0): {', '.join(unclear)}")
        against = [a.arm for a in report.arms if a.reading.startswith("no effect detected")]
        if against:
            lines.append(f"no effect detected (95 % interval holds 0, not the sprint's result): {', '.join(against)}")
    lines += _versus_lines(report)
    lines += _why_lines(report)
    lines.append(
        f"run {report.run_id}  config {report.lineage['config_hash']}  code {report.lineage['code_version'][:12]}"
        f"  data {report.lineage['data_hash']}"
    )
    return "\n".join(lines)


def _versus_lines(report: Report) -> list[str]:
    """Whether this run tells each arm from the reference: its `vs` interval against the MDE of a difference."""
    p = report.power_vs_reference
    if p is None:
        return []
    compared = {a.arm: a.vs_reference for a in report.arms if a.vs_reference is not None}
    apart = [arm for arm, e in compared.items() if e.low > 0 or e.high < 0]
    not_apart = [arm for arm in compared if arm not in apart]
    words = [f"told apart (95 % interval excludes 0): {', '.join(apart)}"] if apart else []
    words += [f"cannot tell apart at this power: {', '.join(not_apart)}"] if not_apart else []
    return [
        f"vs {report.reference}: MDE {p.mde * 100:.1f} pp at {p.seeds} seed{'s' if p.seeds != 1 else ''} x "
        f"{p.problems} problems; " + "; ".join(words)
    ]


def _why_lines(report: Report) -> list[str]:
    """The report's "Why" in two terminal lines, for runs where some arm followed failures up: what each arm
    trained on (from newly solved problems), and how often its first tries and its follow-ups passed."""
    levels = report.levels
    if levels.empty or not (levels.level > 0).any():
        return []
    sources = report.sources.set_index("arm")
    passed = levels.assign(follow_up=levels.level > 0).groupby(["arm", "follow_up"])[["attempts", "passed"]].sum()

    def rate(arm: str, follow_up: bool) -> str:
        if (arm, follow_up) not in passed.index:
            return "-"
        row = passed.loc[(arm, follow_up)]
        return f"{100 * row.passed / row.attempts:.1f} %"

    arms = [a.arm for a in report.arms if a.arm in sources.index]
    return [
        "trained on (examples from newly solved problems): "
        + ", ".join(f"{a} {sources.examples[a]} ({sources.examples_newly_solved[a]})" for a in arms),
        "passed (first tries / follow-ups): " + ", ".join(f"{a} {rate(a, False)} / {rate(a, True)}" for a in arms),
    ]


def report_page(report: Report) -> ReportPage:
    """The report as a page: its sections in order, every number formatted once for both renderers."""
    lin = report.lineage
    top: list[Block] = (
        [Paragraph(text("The original sprint measured: ", strong(report.seed_result)))] if report.seed_result else []
    )
    top += [
        Paragraph(
            text(
                "Δpp: last round minus the base model (round 0) on the same seeds and held-out problems; 95 % interval "
                "from a paired bootstrap over seeds and problems; p from the same bootstrap. ",
                code(f"vs {report.reference}"),
                ": the arm's last round minus the reference arm's, paired the same way (- for an arm that shares no "
                "problems with it, e.g. one on another domain).",
            )
        ),
        Table.from_frame(
            pd.DataFrame(table_rows(report))
            .drop(columns=["experiment", "run_id", "status", "config_hash", "code_version", "data_hash"])
            .assign(
                delta_pp=[signed_pp(a.delta.mean) for a in report.arms],
                p_value=[p_text(a.delta.p_value) for a in report.arms],
                reading=[a.reading or "-" for a in report.arms],
                **{f"vs_{report.reference}": lambda df: df[f"vs_{report.reference}"].replace("", "-")},
            )
        ),
        *_power_blocks(report),
        Paragraph(
            text(
                "Lineage: config ",
                code(lin["config_hash"]),
                ", code ",
                code(lin["code_version"]),
                ", data ",
                code(lin["data_hash"]),
                ". Query: ",
                code(f"pidistill sql \"select * from summary where run_id = '{report.run_id}'\""),
                ".",
            )
        ),
    ]
    top.append(
        Table.from_records([{"arm": arm, "what it changes": change} for arm, change in report.arm_changes.items()])
    )
    sections = [
        Section(text(f"{report.experiment} — run ", code(report.run_id)), 1, top),
        Section(
            text("pass@1 by round"),
            2,
            [
                Table.from_records(
                    [
                        {
                            "arm": a.arm,
                            "round": r,
                            "pass1": e.mean,
                            "ci_low": e.low,
                            "ci_high": e.high,
                            "seeds": e.n_seeds,
                        }
                        for a in report.arms
                        for r, e in a.by_round
                    ]
                ),
                *_plot(report, "pass_by_round.png", "pass@1 by round"),
            ],
        ),
        Section(text("pass@k by round"), 2, _pass_at_k_blocks(report)),
    ]
    if report.sweep:
        sections.append(Section(text("Sweep over ", code(report.sweep[0])), 2, _plot(report, "sweep.png", "sweep")))
    sections += [
        Section(
            text("First tries and retries"),
            2,
            [
                Paragraph(
                    text(
                        "Training attempts of all seeds and rounds by follow-up level (0: the first try, 1: the first "
                        "follow-up of a failure, ...): how often each passed and how many became SFT data. A retry "
                        "arm whose follow-ups pass no more often than a double-sample control's is not using what "
                        "its retry prompt shows."
                    )
                ),
                Table.from_frame(report.levels),
                *_budget_blocks(report.budget),
                Paragraph(text("Why attempts were rejected (", code("attempts.reject_reason"), "):")),
                Table.from_frame(report.rejects),
            ],
        ),
        Section(text("Why: where the training data came from, and what moved"), 2, _why_blocks(report)),
        Section(text("An accepted retry, from its failed first try"), 2, _chain_blocks(report.retry_chain)),
        Section(text("Compute per arm (all seeds and rounds)"), 2, [_compute_table(report.compute)]),
        Section(text("Path diversity of correct training attempts"), 2, [Table.from_frame(report.diversity)]),
    ]
    return ReportPage(report.run_id, report.experiment, dict(lin), sections)


def _power_blocks(report: Report) -> list[Block]:
    """The power line under the Δpp table: what this design could detect, and how to read an interval with 0."""
    if report.power is None:
        return []
    versus = report.power_vs_reference
    against: list[str | Span] = (
        []
        if versus is None
        else [
            f" Arms against {report.reference} (the ",
            code(f"vs_{report.reference}"),
            " column): ",
            strong(design_line(versus)),
            ".",
        ]
    )
    return [
        Paragraph(
            text(
                "Power: ",
                strong(design_line(report.power)),
                ". MDE: the smallest true Δ whose 95 % interval excludes 0 in 80 % of runs of this design "
                "(analysis/power.py). ",
                code("reading"),
                ": an interval that holds 0 (and the sprint's result for the arm, when it names one) is ",
                "inconclusive at this power: the run cannot tell that effect from none.",
                *against,
            )
        )
    ]


def _why_blocks(report: Report) -> list[Block]:
    """The mechanism behind the Δs (analysis/mechanism.py): data sources, answer format, held-out flips."""
    return [
        Paragraph(
            text(
                "Accepted examples by the problem they came from, over all seeds and rounds (",
                code("problems"),
                " counts seed x round x problem): problems a first try already solved, whose examples sharpen what "
                "the model can do, and problems only a follow-up solved (newly solved), what a retry or a second "
                "sample adds to plain rejection sampling.",
            )
        ),
        Table.from_frame(report.sources),
        Paragraph(
            text(
                "Held-out pass@1 split into answer format and answer: the share of completions with an answer "
                "the verifier could read, and the pass rate among those. A gain in the first alone is format "
                "learning, not the skill."
            )
        ),
        Table.from_frame(report.answers),
        Paragraph(
            text(
                "Held-out (seed, problem) pairs from round 0 to each arm's last round: gained (failed, now "
                "passes), lost, kept and never solved. With one sample a problem (greedy evaluation) an arm's Δ is "
                "(gained - lost) / pairs."
            )
        ),
        Table.from_frame(report.flips),
    ]


def _budget_blocks(budget: pd.DataFrame) -> list[Block]:
    """The follow-up budget per arm, when any arm followed a failure up (a run without retries leaves it out)."""
    if budget.empty or not budget.follow_ups.any():
        return []
    return [
        Paragraph(
            text(
                "Follow-up budget: follow-up samples per failed first try (verifier errors are not followed up), "
                "each follow-up traced to its first try through ",
                code("parent_id"),
                ". A double-sample control matches the retry arm's budget where these agree: with ",
                code("retry.budget: fixed"),
                " or ",
                code("retry.shape: fan"),
                " every failed first try gets exactly K; with ",
                code("until_pass"),
                " a chain stops at its first accepted follow-up, so an arm whose follow-ups pass more often "
                "spends less.",
            )
        ),
        Table.from_frame(budget),
    ]


def _chain_blocks(chain: RetryChain | None) -> list[Block]:
    if chain is None:
        return [Paragraph(text("No retry was accepted in this run (or the experiment does not retry)."))]
    return [
        Paragraph(
            text("Arm ", code(chain.arm), ", problem ", code(chain.problem_id), ", PI ", code(chain.pi_kind), ".")
        ),
        Preformatted("The question (what an accepted retry trains on):", chain.prompt),
        Preformatted("The failed first try:", chain.failed),
        Preformatted("The verifier on it:", chain.feedback or "(no feedback)"),
        Preformatted(
            "The retry prompt (the question plus the PI):"
            if chain.retry_prompt != chain.prompt
            else "The retry prompt: the question again (a double-sample control: a second try, nothing new shown):",
            chain.retry_prompt,
        ),
        Preformatted("The accepted retry:", chain.retry),
    ]


def _compute_table(compute: pd.DataFrame) -> Table:
    """Compute with arms as columns: a dozen measures across is wider than a page, a few arms are not."""
    if compute.empty:
        return Table.from_frame(compute)
    arms = [str(a) for a in compute.arm]

    def value(v: Any) -> Any:  # counts print as counts: the transpose made every column float
        return int(v) if isinstance(v, float) and v.is_integer() else v

    rows = [[m] + [cell(value(v)) for v in compute[m]] for m in compute.columns if m != "arm"]
    return Table(["measure", *arms], rows)


def _plot(report: Report, name: str, alt: str) -> list[Block]:
    return [Image(name, alt, report.images[name])] if name in report.images else []


def _pass_at_k_blocks(report: Report) -> list[Block]:
    if report.k == 1:
        return [Paragraph(text("Evaluation drew one sample per problem (n=1), so pass@k equals pass@1 (above)."))]
    k = report.k
    few = any(p.pass_k is None for a in report.arms for p in a.pass_at_k)
    dash = f' "-": that arm and round drew fewer than {k} samples of a problem.' if few else ""
    return [
        Paragraph(
            text(
                f"k = {k}, the most samples per problem (n) drawn in evaluation. pass@{k}: the unbiased "
                "estimator (Chen et al. 2021), 1 - C(n-c, k) / C(n, k) for c correct of n samples, averaged "
                f"over problems and seeds; 95 % interval from the same two-way bootstrap.{dash}"
            )
        ),
        Table.from_records(
            [
                {
                    "arm": a.arm,
                    "round": p.round,
                    "n": p.n,
                    "pass1": p.pass1,
                    **(
                        {f"pass@{k}": "-", "ci_low": "-", "ci_high": "-"}
                        if p.pass_k is None
                        else {f"pass@{k}": p.pass_k.mean, "ci_low": p.pass_k.low, "ci_high": p.pass_k.high}
                    ),
                    "seeds": p.seeds,
                }
                for a in report.arms
                for p in a.pass_at_k
            ]
        ),
    ]


def to_markdown(report: Report, image_dir: str | None = ".") -> str:
    """report.md; `image_dir=None` leaves out the links to the PNGs (for the Prefect artifact)."""
    return render_markdown(report_page(report), link_images=image_dir is not None)


def to_html(report: Report) -> str:
    """One self-contained page: the same sections as the markdown, tables as HTML, plots embedded as PNG data."""
    return render_html(report_page(report))


def write_report(report: Report, home: Path | None = None) -> Path:
    """Write report.md (+ PNGs) and a self-contained report.html under <run>/report/; returns the html path."""
    out = (home or home_dir()) / report.run_id / "report"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in report.images.items():
        (out / name).write_bytes(data)
    (out / "report.md").write_text(to_markdown(report))
    path = out / "report.html"
    path.write_text(to_html(report))
    return path
