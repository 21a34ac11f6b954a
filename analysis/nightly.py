"""The nightly's numbers: each arm's Δpp as a `nightly_arms` row, the `nightly` view's comparison, its markdown.

One comparison row (from the view, abridged):

    {"preset": "demo", "arm": "retry", "verdict": "regression", "delta_pp": 2.0, "ci_low_pp": 1.0,
     "ci_high_pp": 3.0, "prev_delta_pp": 10.0, "change_pp": -8.0, "change_ci_pp": 1.41, "code_version": "bbb..."}

How nights are compared: after each preset, its arms' Δpp vs base with the 95 % interval (analysis.report:
the paired two-way bootstrap over seeds and problems) go to the `nightly_arms` table. The catalog's
`nightly` view (storage/catalog.py) puts each arm next to the previous night of the same experiment, config
hash and arm, and flags the change as a regression (or improvement) when it lies outside ± sqrt(h² + h_prev²),
h being each night's interval half-width. What is published is read from that view, so the artifacts and
`select * from nightly` always agree.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from analysis.report import Report
from analysis.tables import markdown_table
from storage.catalog import query


def arm_rows(
    report: Report,
    nightly_id: str,
    nightly_started_at: datetime,
    preset: str,
    smoke: bool,
    created_at: datetime | None = None,
) -> list[dict]:
    """`nightly_arms` rows of one preset's run: each arm's Δpp vs base and its 95 % interval, in pp."""
    created_at = created_at or datetime.now(UTC)
    return [
        {
            "nightly_id": nightly_id,
            "nightly_started_at": nightly_started_at,
            "preset": preset,
            "smoke": smoke,
            "run_id": report.run_id,
            "experiment": report.experiment,
            "config_hash": report.lineage["config_hash"],
            "arm": a.arm,
            "seeds": a.seeds,
            "rounds": a.rounds,
            "problems": a.delta.n_problems,
            "base_pass1": a.base_pass1,
            "final_pass1": a.final_pass1,
            "delta_pp": a.delta.mean * 100,
            "ci_low_pp": a.delta.low * 100,
            "ci_high_pp": a.delta.high * 100,
            "p_value": a.delta.p_value,
            "created_at": created_at,
        }
        for a in report.arms
    ]


def comparison(nightly_id: str) -> list[dict]:
    """This night's rows of the `nightly` view (one per preset x arm), as JSON-ready records."""
    df = query("SELECT * FROM nightly WHERE nightly_id = $id ORDER BY preset, arm", params={"id": nightly_id})
    records = df.astype(object).where(df.notna(), None).to_dict("records")
    for r in records:
        for k, v in r.items():
            if isinstance(v, datetime):
                r[k] = v.isoformat()
            elif isinstance(v, float) and not math.isfinite(v):
                r[k] = None
    return records


def pp(v: float | None, sign: bool = True) -> str:
    """Percentage points as the nightly prints them: '+2.0', '1.4' (sign=False), '-' for none."""
    return "-" if v is None else (f"{v:+.1f}" if sign else f"{v:.1f}")


def table_rows(rows: list[dict]) -> list[dict]:
    """The comparison as the table artifact shows it: rounded, one row per preset x arm."""

    def r2(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return [
        {
            "preset": r["preset"],
            "arm": r["arm"],
            "verdict": r["verdict"],
            "delta_pp": r2(r["delta_pp"]),
            "ci95_pp": f"[{pp(r['ci_low_pp'])}, {pp(r['ci_high_pp'])}]",
            "prev_delta_pp": r2(r["prev_delta_pp"]),
            "change_pp": r2(r["change_pp"]),
            "change_ci_pp": r2(r["change_ci_pp"]),
            "run_id": r["run_id"],
            "prev_run_id": r["prev_run_id"],
            "code_version": (r["code_version"] or "")[:12],
            "prev_code_version": (r["prev_code_version"] or "")[:12],
        }
        for r in rows
    ]


_HEADERS = [
    "preset",
    "arm",
    "verdict",
    "Δpp tonight (95% CI)",
    "Δpp before",
    "change",
    "± CI of change",
    "code",
    "code before",
]


def _table(rows: list[dict]) -> str:
    return markdown_table(
        _HEADERS,
        [
            [
                r["preset"],
                r["arm"],
                r["verdict"],
                f"{pp(r['delta_pp'])} [{pp(r['ci_low_pp'])}, {pp(r['ci_high_pp'])}]",
                pp(r["prev_delta_pp"]),
                pp(r["change_pp"]),
                pp(r["change_ci_pp"], sign=False),
                f"`{(r['code_version'] or '-')[:12]}`",
                f"`{(r['prev_code_version'] or '-')[:12]}`",
            ]
            for r in rows
        ],
    )


def to_markdown(nightly_id: str, rows: list[dict], failures: dict[str, str], presets: list[str], smoke: bool) -> str:
    """The nightly report: counts, regressions and improvements first, every arm, failed presets."""
    by = {v: [r for r in rows if r["verdict"] == v] for v in ("regression", "improvement", "within-ci", "no-baseline")}
    scale = "micro scale (--smoke)" if smoke else "full scale"
    lines = [
        f"# Nightly `{nightly_id}`",
        "",
        f"Presets: {', '.join(presets)} at {scale}. **{len(by['regression'])} regression(s)**, "
        f"{len(by['improvement'])} improvement(s), {len(by['within-ci'])} arm(s) within the CI, "
        f"{len(by['no-baseline'])} without an earlier night; **{len(failures)} preset(s) failed**.",
        "",
    ]
    for verdict, title in (("regression", "Regressions"), ("improvement", "Improvements")):
        if by[verdict]:
            lines += [f"## {title}", "", _table(by[verdict]), ""]
    if rows:
        lines += ["## Every arm", "", _table(rows), ""]
    if failures:
        lines += ["## Failed presets", ""] + [f"- **{p}**: {msg}" for p, msg in failures.items()] + [""]
    lines += [
        "Each arm is compared with the previous nightly run of the same experiment, config hash and arm. "
        "Δpp: last round minus the base model, with its 95 % paired-bootstrap interval. A change is a "
        "regression (improvement) when it is below (above) ± sqrt(h² + h_before²), h the half-widths of the "
        "two nights' intervals.",
        "",
        f"SQL: `pidistill sql \"select * from nightly where nightly_id = '{nightly_id}'\"`",
    ]
    return "\n".join(lines) + "\n"
