"""`pidistill plan`: power before a run, from the config's seeds x eval problems and variance measured on
earlier runs of the preset (or assumed), by the model of analysis.power.

    $ pidistill plan demo
    demo: 3 seeds x 200 eval problems; arms no-retry, double-sample, retry
    variance vs base: assumed (no earlier runs of 'demo'): seed sd 2.0 pp, problem sd 17.3 pp, ...
    minimum detectable effect (two-sided 5%, 80% power):
      vs base          7.1 pp
      vs no-retry     10.0 pp
    effect +8.8 pp, from seed_result "retry +8.8pp vs double-sample +1.4pp (GSM8K, real models)":
      vs base        2 seeds at 200 problems; 118 problems at 3 seeds
      ...
"""

from __future__ import annotations

import math

from analysis.power import (
    ALPHA,
    POWER,
    Power,
    catalog_components,
    power_of,
    seed_effect,
    z_factor,
)
from experiments.config import ExperimentConfig


class PlanError(ValueError):
    """Bad input to `plan`: an effect that is not a difference of pass rates, a pilot run with nothing to measure."""


def check_effect(effect: float) -> float:
    """An effect is a nonzero difference of pass rates, a fraction: 5 for 5 pp would plan for 500 pp."""
    if not (math.isfinite(effect) and 0 < abs(effect) < 1):
        raise PlanError(f"--effect {effect:g}: give a nonzero difference of pass rates as a fraction (0.05 = 5 pp)")
    return effect


def design(config: ExperimentConfig) -> tuple[int, int]:
    """(seeds, eval problems) of a config; an arm that evaluates fewer problems sets the design's P."""
    sizes = [config.for_arm(a.name).domain.eval_size for a in config.arms]
    return len(config.seeds), min(sizes)


def plan(
    config: ExperimentConfig, effect: float | None = None, pilot: list[str] | None = None
) -> tuple[list[Power], float | None]:
    """Each comparison's power (vs base; vs the reference arm when there are two or more arms), and the effect
    planned for: `effect`, else the first pp number of the preset's seed_result, else None."""
    seeds, problems = design(config)
    effect = check_effect(effect) if effect is not None else seed_effect(config.seed_result)
    reference = config.arms[0].name if len(config.arms) > 1 else None
    out = []
    for versus in [None, reference] if reference else [None]:
        try:
            c = catalog_components(config.name, versus, config.config_hash(), config.smoke, pilot)
        except ValueError as exc:  # a named pilot run that is not there or has nothing to measure
            raise PlanError(str(exc)) from None
        out.append(power_of(c, seeds, problems, "vs base" if versus is None else f"vs {versus}", effect))
    return out, effect


def _pp(fraction: float) -> str:
    """Signed pp, one decimal; two for an effect under 0.1 pp (opsd-null's +0.04 would print as +0.0)."""
    return f"{fraction * 100:+.1f}" if abs(fraction) >= 0.001 else f"{fraction * 100:+.2f}"


def _needs(p: Power) -> str:
    assert p.needs is not None
    floor_p = z_factor() * math.sqrt(p.components.problem / p.problems) * 100
    floor_s = z_factor() * math.sqrt(p.components.seed / p.seeds) * 100
    seeds = (
        f"{p.needs.seeds} seed{'s' if p.needs.seeds != 1 else ''} at {p.problems} problems"
        if p.needs.seeds is not None
        else f"no number of seeds suffices at {p.problems} problems (they keep the MDE above {floor_p:.1f} pp)"
    )
    problems = (
        f"{p.needs.problems} problems at {p.seeds} seed{'s' if p.seeds != 1 else ''}"
        if p.needs.problems is not None
        else f"no number of problems suffices at {p.seeds} seeds (they keep the MDE above {floor_s:.1f} pp)"
    )
    return f"{seeds}; {problems}"


def format_plan(config: ExperimentConfig, powers: list[Power], effect: float | None, effect_given: bool) -> str:
    seeds, problems = powers[0].seeds, powers[0].problems
    width = max(len(p.comparison) for p in powers) + 2
    lines = [
        f"{config.name}: {seeds} seed{'s' if seeds != 1 else ''} x {problems} eval problems; "
        f"arms {', '.join(a.name for a in config.arms)}"
    ]
    lines += [f"variance {p.comparison}: {p.components.source}: {p.components.describe()}" for p in powers]
    lines.append(f"minimum detectable effect (two-sided {ALPHA:.0%}, {POWER:.0%} power):")
    lines += [f"  {p.comparison:<{width}} {p.mde * 100:5.1f} pp" for p in powers]
    if effect is None:
        lines.append(f"effect: none given (--effect 0.05) and no pp in seed_result {config.seed_result!r}")
        return "\n".join(lines)
    source = "--effect" if effect_given else f'from seed_result "{config.seed_result}"'
    lines.append(f"effect {_pp(effect)} pp, {source}:")
    lines += [f"  {p.comparison:<{width}} {_needs(p)}" for p in powers]
    return "\n".join(lines)
