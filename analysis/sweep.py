"""A sweep's table: per setting, the compared arm minus the reference with its interval, the power, and why.

One row per setting (experiments/sweep.py), from its run's report and the mechanism queries:

    setting | what it changes | minutes | base | Δ reference | Δ compared | compared - reference [95 % CI]
            | MDE of that difference | examples (newly solved) per arm | reading
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis.mechanism import examples_by_problem
from analysis.report import build_report
from analysis.tables import interval_pp, signed_pp
from storage.catalog import query


@dataclass(frozen=True)
class SweepRow:
    setting: str
    changes: str
    run_id: str
    minutes: float
    base: float
    reference_delta: float
    compared_delta: float
    difference: float  # compared's last round minus reference's, paired over seeds and problems
    low: float
    high: float
    mde: float | None  # of the difference, under this run's own variance of it
    examples: dict[str, tuple[int, int]]  # arm -> (accepted examples, of them from newly solved problems)

    @property
    def separates(self) -> bool:
        return self.low > 0 or self.high < 0

    def reading(self) -> str:
        if self.separates:
            return "separates" if self.difference > 0 else "separates (the other way)"
        return "inconclusive"


def sweep_row(
    setting: str, changes: str, run_id: str, reference: str, compared: str, home: Path | None = None
) -> SweepRow:
    report = build_report(run_id, home)
    arm = {a.arm: a for a in report.arms}
    diff = arm[compared].vs_reference if reference in arm and compared in arm else None
    if diff is None:
        raise ValueError(f"run {run_id} has no {compared} vs {reference} comparison (arms: {list(arm)})")
    examples = examples_by_problem(run_id, home).set_index("arm")
    return SweepRow(
        setting=setting,
        changes=changes,
        run_id=run_id,
        minutes=_minutes(run_id, home),
        base=arm[reference].base_pass1,
        reference_delta=arm[reference].delta.mean,
        compared_delta=arm[compared].delta.mean,
        difference=diff.mean,
        low=diff.low,
        high=diff.high,
        mde=None if report.power_vs_reference is None else report.power_vs_reference.mde,
        examples={a: (int(examples.examples[a]), int(examples.examples_newly_solved[a])) for a in examples.index},
    )


def _minutes(run_id: str, home: Path | None) -> float:
    row = query(
        "SELECT epoch(finished_at) - epoch(started_at) AS s FROM runs WHERE run_id = $run_id", home, {"run_id": run_id}
    )
    return float(row.s.iloc[0]) / 60 if not row.empty and row.s.notna().all() else float("nan")


HEADER = [
    "setting",
    "what it changes",
    "min",
    "base",
    "Δ {ref}",
    "Δ {cmp}",
    "{cmp} − {ref} [95 % CI]",
    "MDE",
    "examples (newly solved)",
    "reading",
]


def to_markdown(rows: list[SweepRow], reference: str, compared: str) -> str:
    """The sweep's table in markdown (the README and the closing notes quote it as is)."""
    head = [h.format(ref=reference, cmp=compared) for h in HEADER]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        examples = ", ".join(f"{a} {n} ({new})" for a, (n, new) in r.examples.items())
        cells = [
            r.setting,
            r.changes,
            f"{r.minutes:.1f}",
            f"{r.base:.3f}",
            signed_pp(r.reference_delta),
            signed_pp(r.compared_delta),
            f"{signed_pp(r.difference)} {interval_pp(r.low, r.high)}",
            "-" if r.mde is None else f"{100 * r.mde:.1f} pp",
            examples,
            r.reading(),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
