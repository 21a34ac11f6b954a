"""Power, stated before a run and after it: the minimum detectable effect (MDE) of a design of S seeds x P
held-out problems, and the seeds or problems an effect needs.

    >>> c = VarianceComponents(seed=0.02**2, problem=0.03, residual=0.07, source="assumed")
    >>> round(mde(c, seeds=3, problems=200) * 100, 1)      # pp, two-sided 5 %, 80 % power
    7.1
    >>> seeds_needed(c, 0.088, problems=200), problems_needed(c, 0.088, seeds=3)
    (2, 118)

The comparison is the report's (analysis.report): a seeds x problems matrix of paired differences d[s, p]
of held-out pass rates (an arm's last round minus its round 0, or minus the reference arm's last round,
on the same seeds and problems), averaged. Its model, a two-way random-effects one:

    d[s, p] = effect + a[s] + b[p] + e[s, p]

    a[s]     var seed:     the seed's shift of the whole effect (training noise: data order, samples drawn);
    b[p]     var problem:  how much training moves problem p, shared by every seed;
    e[s, p]  var residual: which problems this seed's training flips, plus each rate's binomial sampling
                           noise (n_pass / n of n samples), within one seed; paired arms share the problems.

The mean's true variance is seed/S + problem/P + residual/(S P). The report's interval is a two-way
(pigeonhole) bootstrap: seeds and problems resampled independently. Its variance is exactly
V_rows/S + V_cols/P + V_inter/(S P) (row means, column means, double-centred cells; derived from the
multinomial weights' covariances), whose expectation is, to leading order,

    SE^2 = seed / S + problem / P + 3 residual / (S P)

(the residual enters the row means, the column means and the cells: Owen 2007). This module uses that SE,
so its MDE is the effect the report's interval excludes 0 for, 80 % of the time; a simulation in
tests/test_power.py checks it. Leaving out the bootstrap's finite-sample factors ((S-1)/S, (P-1)/P) makes it
a little conservative, and still charges a one-seed design its training noise, which a one-seed
bootstrap cannot see. For a z-test at two-sided level alpha with power 1 - beta the effect must be
(z_{1-alpha/2} + z_{1-beta}) standard errors away from 0:

    MDE = (z_0.975 + z_0.8) SE = 2.80 SE

Solving MDE(S) = effect for S gives seeds_needed, MDE(P) = effect for P problems_needed; when the other
dimension's term alone exceeds (effect / 2.80)^2 no number suffices (None).

The components are estimated by the method of moments of a two-way ANOVA without replication
(`components`), from earlier runs of a preset in the catalog (`catalog_components`), from a run itself
(the report), or assumed (`assumed_components`) when there is nothing to measure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

ALPHA = 0.05  # two-sided, as the report's 95 % interval
POWER = 0.8
# Each residual counts three times in the two-way bootstrap's variance: in the row means, the column means
# and the cells (module docstring).
BOOTSTRAP_RESIDUAL = 3.0

# Assumed components for one greedy sample per problem (eval.n = 1, the presets' evaluation) when no run has
# measured them: a seed moves the whole effect by ~2 pp; about one problem in ten flips between the base
# and a trained model, a third of that consistently across seeds. Order-of-magnitude guesses: a pilot run
# of the preset replaces them (`pidistill plan --pilot RUN_ID`).
ASSUMED_SEED = 0.02**2
ASSUMED_PROBLEM = 0.03
ASSUMED_RESIDUAL = 0.07


@dataclass(frozen=True)
class VarianceComponents:
    """The variances of the model in the module docstring, in squared fractions (0.0004 = (2 pp)^2)."""

    seed: float
    problem: float
    residual: float
    source: str  # "assumed", "this run", or the runs measured: "runs demo-1, demo-2 (3 seeds x 200 problems)"
    assumed: tuple[str, ...] = ()  # components not measured, taken from the assumed ones ("seed", ...)

    def __post_init__(self) -> None:
        for name in ("seed", "problem", "residual"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"variance component {name} must be a finite number >= 0, got {v}")

    def describe(self) -> str:
        """'seed sd 2.0 pp, problem sd 17.3 pp, seed x problem sd 26.5 pp' (standard deviations read easier), a
        component not measured beside measured ones marked so."""
        some = not {"seed", "problem", "residual"} <= set(self.assumed)
        mark = lambda name: " (assumed)" if some and name in self.assumed else ""
        one_seed = "problem/residual split" in self.assumed
        split = " (with the problem's: one seed cannot tell them apart)" if one_seed else ""
        sd = lambda v: f"{math.sqrt(v) * 100:.1f} pp"
        return (
            f"seed sd {sd(self.seed)}{mark('seed')}, problem sd {sd(self.problem)}{mark('problem')}, "
            f"seed x problem sd {sd(self.residual)}{mark('residual')}{split}"
        )


@dataclass(frozen=True)
class Needs:
    """What one effect needs: seeds at the design's problems, problems at its seeds (None: no number suffices)."""

    effect: float
    seeds: int | None
    problems: int | None


@dataclass(frozen=True)
class Power:
    """One comparison of a design: its components, SE and MDE, and what an effect of interest needs."""

    comparison: str  # "vs base" or "vs <reference arm>"
    seeds: int
    problems: int
    components: VarianceComponents
    se: float
    mde: float
    needs: Needs | None = None


def z_factor(alpha: float = ALPHA, power: float = POWER) -> float:
    """z_{1-alpha/2} + z_{power}: how many standard errors a detectable effect lies from 0 (2.80 at 5 %, 80 %)."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"need 0 < alpha < 1 and 0 < power < 1, got alpha={alpha}, power={power}")
    z = NormalDist().inv_cdf
    return z(1 - alpha / 2) + z(power)


def standard_error(c: VarianceComponents, seeds: int, problems: int) -> float:
    """The report's interval's SE for S seeds x P problems (module docstring)."""
    if seeds < 1 or problems < 1:
        raise ValueError(f"need at least 1 seed and 1 problem, got {seeds} seeds x {problems} problems")
    s, p = seeds, problems
    return math.sqrt(c.seed / s + c.problem / p + BOOTSTRAP_RESIDUAL * c.residual / (s * p))


def mde(c: VarianceComponents, seeds: int, problems: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true effect (a fraction: 0.05 = 5 pp) whose interval excludes 0 with probability `power`."""
    return z_factor(alpha, power) * standard_error(c, seeds, problems)


def _target_variance(effect: float, alpha: float, power: float) -> float:
    if effect == 0 or not math.isfinite(effect):
        raise ValueError(f"the effect must be a nonzero difference of pass rates (0.05 = 5 pp), got {effect}")
    return (abs(effect) / z_factor(alpha, power)) ** 2


def _smallest(count: float) -> int:
    # A count that solves the equation exactly (3.0000000001 from rounding) needs 3, not 4.
    return max(1, math.ceil(count - 1e-9))


def seeds_needed(
    c: VarianceComponents, effect: float, problems: int, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """The fewest seeds whose MDE at `problems` is at most |effect|; None when the problems' term alone is larger.

    SE^2 = (seed + 3 residual / P) / S + problem / P, solved for S."""
    room = _target_variance(effect, alpha, power) - c.problem / problems
    per_seed = c.seed + BOOTSTRAP_RESIDUAL * c.residual / problems
    if per_seed == 0:
        return 1 if room >= 0 else None
    return _smallest(per_seed / room) if room > 0 else None


def problems_needed(
    c: VarianceComponents, effect: float, seeds: int, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """The fewest problems whose MDE at `seeds` is at most |effect|; None when the seeds' term alone is larger.

    SE^2 = seed / S + (problem + 3 residual / S) / P, solved for P."""
    room = _target_variance(effect, alpha, power) - c.seed / seeds
    per_problem = c.problem + BOOTSTRAP_RESIDUAL * c.residual / seeds
    if per_problem == 0:
        return 1 if room >= 0 else None
    return _smallest(per_problem / room) if room > 0 else None


def power_of(
    c: VarianceComponents, seeds: int, problems: int, comparison: str = "vs base", effect: float | None = None
) -> Power:
    """A design's SE and MDE under `c`, and what `effect` (if given) needs."""
    needs = None
    if effect is not None:
        needs = Needs(effect, seeds_needed(c, effect, problems), problems_needed(c, effect, seeds))
    return Power(comparison, seeds, problems, c, standard_error(c, seeds, problems), mde(c, seeds, problems), needs)


def assumed_components(comparison: str = "vs base") -> VarianceComponents:
    """The assumed components (constants above). Arm vs arm doubles each: the two arms train independently,
    each with the noise an arm has against the shared base model."""
    k = 1.0 if comparison == "vs base" else 2.0
    every = ("seed", "problem", "residual")
    return VarianceComponents(k * ASSUMED_SEED, k * ASSUMED_PROBLEM, k * ASSUMED_RESIDUAL, "assumed", every)


# --- estimation -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Anova:
    """One matrix's method-of-moments estimates with their degrees of freedom (the pooling weights)."""

    seeds: int
    problems: int
    seed: float
    problem: float
    residual: float


def _anova(d: np.ndarray) -> _Anova:
    """Two-way ANOVA without replication of a seeds x problems matrix (S >= 2, P >= 2). Expected mean squares:
    MS_seed = P seed + residual, MS_problem = S problem + residual, MS_residual = residual."""
    s, p = d.shape
    m, rows, cols = d.mean(), d.mean(axis=1), d.mean(axis=0)
    ms_res = float(((d - rows[:, None] - cols[None, :] + m) ** 2).sum() / ((s - 1) * (p - 1)))
    ms_seed = float(p * ((rows - m) ** 2).sum() / (s - 1))
    ms_problem = float(s * ((cols - m) ** 2).sum() / (p - 1))
    # A negative estimate means "smaller than the residual can resolve": 0, as is usual for moments.
    return _Anova(s, p, max(0.0, (ms_seed - ms_res) / p), max(0.0, (ms_problem - ms_res) / s), ms_res)


def _pooled(values: Iterable[tuple[float, float]]) -> float:
    """Mean of (value, weight) pairs weighted by degrees of freedom."""
    pairs = list(values)
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs)


def components(
    matrices: list[np.ndarray], source: str, fallback: VarianceComponents | None = None
) -> VarianceComponents:
    """Variance components pooled over seeds x problems matrices of paired differences (one per run and arm).

    Matrices with two or more seeds give all three components. With only one-seed matrices the seed
    variance cannot be measured (it is the fallback's, and says so), and a problem's shared part cannot be
    told from its seed-specific part: all of it counts as residual, the conservative choice (3x weight)."""
    fallback = fallback or assumed_components()
    usable = [np.asarray(d, dtype=float) for d in matrices if d.ndim == 2 and d.shape[1] >= 2]
    if not usable:
        raise ValueError(f"{source}: no matrix of paired differences with at least 2 problems to measure")
    several = [d for d in usable if d.shape[0] >= 2]
    if not several:
        total = _pooled((float(d.var(ddof=1)), d.shape[1] - 1) for d in usable)
        return VarianceComponents(fallback.seed, 0.0, total, source, ("seed", "problem/residual split"))
    fits = [_anova(d) for d in several]
    return VarianceComponents(
        seed=_pooled((f.seed, f.seeds - 1) for f in fits),
        problem=_pooled((f.problem, f.problems - 1) for f in fits),
        residual=_pooled((f.residual, (f.seeds - 1) * (f.problems - 1)) for f in fits),
        source=source,
    )


def _rates(ev: pd.DataFrame, arm: str, rnd: int) -> pd.DataFrame:
    """seeds x problems of pass rates (n_pass / n) of one arm and round; as analysis.report's matrix."""
    sub = ev[(ev.arm == arm) & (ev["round"] == rnd)]
    rates = sub.n_pass / sub.n
    return sub.assign(rate=rates).pivot_table(index="seed", columns="problem_id", values="rate", aggfunc="mean")


def _difference(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """a - b on the seeds and problems both have, problems missing for a seed left out."""
    seeds, problems = a.index.intersection(b.index), a.columns.intersection(b.columns)
    return (a.loc[seeds, problems] - b.loc[seeds, problems]).dropna(axis=1).to_numpy()


def paired_differences(ev: pd.DataFrame, versus: str | None = None) -> list[np.ndarray]:
    """The report's paired differences, one seeds x problems matrix per run and arm, from `evaluations` rows
    (arm, seed, round, problem_id, n, n_pass; run_id optional).

    versus=None: each arm's last round minus its round 0 (arms not trained yet are left out);
    versus=ARM: each other arm's last round minus ARM's last round."""
    out = []
    for _, run in ev.groupby("run_id") if "run_id" in ev.columns else [("", ev)]:
        last = run.groupby("arm")["round"].max()
        if versus is not None and versus not in last.index:
            continue
        for arm, rnd in last.items():
            if versus is None and rnd > 0:
                out.append(_difference(_rates(run, str(arm), int(rnd)), _rates(run, str(arm), 0)))
            elif versus is not None and arm != versus:
                ref = _rates(run, versus, int(last[versus]))
                out.append(_difference(_rates(run, str(arm), int(rnd)), ref))
    return [d for d in out if d.size]


def catalog_components(
    experiment: str,
    versus: str | None = None,
    config_hash: str | None = None,
    smoke: bool = False,
    runs: list[str] | None = None,
    home: Path | None = None,
) -> VarianceComponents:
    """Components measured on earlier runs in the catalog: `runs` if named (a pilot), else the experiment's
    runs with this config hash, else its runs at the same scale (smoke or not); assumed when none has two
    rounds to compare. Raises ValueError naming a named run that does not exist or has no evaluation."""
    from storage.catalog import query

    comparison = "vs base" if versus is None else f"vs {versus}"
    chosen = _chosen_runs(experiment, config_hash, smoke, runs, home)
    if not chosen:
        return replace(assumed_components(comparison), source=f"assumed (no earlier runs of {experiment!r})")
    ev = query(
        "SELECT run_id, arm, seed, round, problem_id, n, n_pass FROM evaluations WHERE list_contains($ids, run_id)",
        home,
        {"ids": chosen},
    )
    missing = sorted(set(runs or []) - set(ev.run_id))
    if missing:
        raise ValueError(f"run {missing[0]!r} has no evaluations to measure variance from")
    matrices = paired_differences(ev, versus)
    if not any(d.shape[1] >= 2 for d in matrices):
        return replace(
            assumed_components(comparison),
            source=f"assumed (runs {', '.join(chosen)} have no trained round to compare {comparison})",
        )
    return components(matrices, _source(ev, matrices), assumed_components(comparison))


def _chosen_runs(
    experiment: str, config_hash: str | None, smoke: bool, runs: list[str] | None, home: Path | None
) -> list[str]:
    from storage.catalog import query

    if runs:
        known = set(query("SELECT run_id FROM runs WHERE list_contains($ids, run_id)", home, {"ids": runs}).run_id)
        unknown = [r for r in runs if r not in known]
        if unknown:
            raise ValueError(f"no run {unknown[0]!r} in the catalog")
        return list(runs)
    df = query(
        "SELECT run_id, config_hash, coalesce(smoke, false) AS smoke FROM runs WHERE experiment = $e "
        "ORDER BY started_at",
        home,
        {"e": experiment},
    )
    same = df[df.config_hash == config_hash] if config_hash else df.iloc[:0]
    # The same config measures exactly this design; else the same scale: a smoke run's tiny model and 40
    # problems say little about a real model's variance, and the other way round.
    return (same if not same.empty else df[df.smoke == smoke]).run_id.tolist()


def _source(ev: pd.DataFrame, matrices: list[np.ndarray]) -> str:
    ids = sorted(set(ev.run_id))
    shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    seeds = max(d.shape[0] for d in matrices)
    problems = max(d.shape[1] for d in matrices)
    return f"run{'s' if len(ids) > 1 else ''} {shown} (up to {seeds} seeds x {problems} problems)"


def design_line(p: Power) -> str:
    """'MDE 7.1 pp at 3 seeds x 200 problems (two-sided 5 %, 80 % power); variance: this run, seed sd ...'."""
    return (
        f"MDE {p.mde * 100:.1f} pp at {p.seeds} seed{'s' if p.seeds != 1 else ''} x {p.problems} problems "
        f"(two-sided {ALPHA:.0%}, {POWER:.0%} power); variance: {p.components.source}, {p.components.describe()}"
    )


# --- words ------------------------------------------------------------------------------------------------

_PP = re.compile(r"(?<![\w.])([+\-\u2212]?\d+(?:\.\d+)?)\s*pp\b")


def seed_effect(seed_result: str) -> float | None:
    """The first number written in pp in a preset's `seed_result`, as a fraction: 'retry +8.8pp vs ...' -> 0.088;
    None when there is none ('R3 regresses: ...')."""
    m = _PP.search(seed_result)
    return None if m is None else float(m.group(1).replace("\u2212", "-")) / 100


def seed_effects_by_arm(seed_result: str, arms: Iterable[str]) -> dict[str, float]:
    """Effects the seed result gives for a named arm ('retry +8.8pp vs double-sample +1.4pp' -> retry: 0.088,
    double-sample: 0.014). A bare '+8.8pp' names no arm: which comparison it was is not said."""
    out: dict[str, float] = {}
    for arm in arms:
        m = re.search(rf"(?<![\w.-]){re.escape(arm)}\s+([+\-\u2212]?\d+(?:\.\d+)?)\s*pp\b", seed_result)
        if m:
            out[arm] = float(m.group(1).replace("\u2212", "-")) / 100
    return out


def reading(low: float, high: float, mde_: float, expected: float | None = None) -> str:
    """How to read an effect's 95 % interval [low, high] at the design's power: '' when it excludes 0 (the
    number speaks); 'inconclusive at this power (MDE x pp)' when it holds both 0 and the effect expected
    (the seed's result, when known): the run cannot tell one from the other. An interval that holds 0 but
    not the expected effect is evidence against that effect, not inconclusive."""
    if low > 0 or high < 0:
        return ""
    if low == high == 0:
        return "no change on any problem"
    if expected is not None and not low <= expected <= high:
        return f"no effect detected; the interval excludes the sprint's {expected * 100:+.1f} pp"
    return f"inconclusive at this power (MDE {mde_ * 100:.1f} pp)"
