"""The report of a run: every number with its uncertainty and its lineage.

    >>> r = build_report("demo-20261126-111702-11d3")
    >>> print(format_table(r))          # the seed-style table, printed after every run
    >>> write_report(r)                 # <run>/report/report.md and a self-contained report.html

Numbers: per arm, pass@1 of the base model (round 0) and of the last round, Δpp
= last - base on the same seeds and problems with a 95 % two-way paired
bootstrap interval (seeds and problems resampled) and a bootstrap p-value;
each arm against the first arm (the reference) the same way; pass@1 by round;
a sweep curve when the arms differ in one field (K, lr, rounds, ...); reject
reasons, compute, and path diversity of correct training attempts. Point
estimates equal the catalog's `summary` view (tests check it).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.diversity import diversity
from analysis.metrics import Estimate, paired_bootstrap
from storage.catalog import query
from storage.writer import home_dir


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


@dataclass
class Report:
    run_id: str
    experiment: str
    seed_result: str
    lineage: dict[str, str]
    reference: str
    arms: list[ArmResult]
    sweep: tuple[str, list[tuple[object, str]]] | None  # (field, [(value, arm)])
    rejects: pd.DataFrame
    compute: pd.DataFrame
    diversity: pd.DataFrame
    images: dict[str, bytes] = field(default_factory=dict)


def _matrix(ev: pd.DataFrame, arm: str, rnd: int) -> pd.DataFrame:
    """seeds x problems of pass rates (n_pass / n) for one arm and round."""
    sub = ev[(ev.arm == arm) & (ev["round"] == rnd)]
    return sub.pivot_table(index="seed", columns="problem_id", values="rate", aggfunc="mean").sort_index()


def _paired(a: pd.DataFrame, b: pd.DataFrame, seed: int) -> Estimate:
    seeds = a.index.intersection(b.index)
    problems = a.columns.intersection(b.columns)
    return paired_bootstrap((a.loc[seeds, problems] - b.loc[seeds, problems]).to_numpy(), seed=seed)


def _sweep(config: dict) -> tuple[str, list[tuple[object, str]]] | None:
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


def build_report(run_id: str, home: Path | None = None, n_boot: int = 2000) -> Report:
    params = {"run_id": run_id}
    runs = query("SELECT * FROM runs WHERE run_id = $run_id", home, params)
    if runs.empty:
        raise KeyError(f"no run {run_id!r} under {home or home_dir()}")
    run = runs.iloc[0]
    config = json.loads(run.config_json)
    ev = query("SELECT arm, seed, round, problem_id, n, n_pass FROM evaluations WHERE run_id = $run_id", home, params)
    ev["rate"] = ev.n_pass / ev.n
    order = [a["name"] for a in config["arms"] if a["name"] in set(ev.arm)]
    reference = order[0]
    last = {arm: int(ev[ev.arm == arm]["round"].max()) for arm in order}
    finals = {arm: _matrix(ev, arm, last[arm]) for arm in order}
    arms = []
    for i, arm in enumerate(order):
        base = _matrix(ev, arm, 0)
        rounds = sorted(ev[ev.arm == arm]["round"].unique())
        arms.append(ArmResult(
            arm=arm, seeds=len(finals[arm].index), rounds=last[arm],
            base_pass1=float(base.to_numpy().mean()), final_pass1=float(finals[arm].to_numpy().mean()),
            delta=_paired(finals[arm], base, seed=i),
            vs_reference=None if arm == reference else _paired(finals[arm], finals[reference], seed=100 + i),
            by_round=[(int(r), paired_bootstrap(_matrix(ev, arm, r).to_numpy(), n_boot=n_boot, seed=r)) for r in rounds],
        ))
    report = Report(
        run_id=run_id, experiment=run.experiment, seed_result=config.get("seed_result", ""),
        lineage={k: str(run[k]) for k in ("config_hash", "code_version", "data_hash", "status")},
        reference=reference, arms=arms, sweep=_sweep(config),
        rejects=query("""SELECT arm, count(*) AS attempts, count(*) FILTER (WHERE accepted) AS accepted,
                                coalesce(reject_reason, 'accepted') AS outcome
                         FROM attempts WHERE run_id = $run_id AND phase = 'train' GROUP BY arm, outcome
                         ORDER BY arm, outcome""", home, params),
        compute=query("SELECT * EXCLUDE (run_id) FROM compute WHERE run_id = $run_id ORDER BY arm", home, params),
        diversity=_diversity(run_id, config["domain"]["name"], home),
    )
    report.images = _plots(report)
    return report


def _diversity(run_id: str, domain: str, home: Path | None) -> pd.DataFrame:
    rows = query("""SELECT arm, round, problem_id, list(completion) AS completions FROM attempts
                    WHERE run_id = $run_id AND phase = 'train' AND passed GROUP BY ALL""", home, {"run_id": run_id})
    out = []
    for (arm, rnd), group in rows.groupby(["arm", "round"]):
        stats = [diversity(domain, list(c)) for c in group.completions]
        out.append({"arm": arm, "round": int(rnd), "problems_solved": len(stats),
                    "distinct_per_problem": float(np.mean([s["distinct"] for s in stats])),
                    "mean_edit_distance": float(np.mean([s["mean_edit_distance"] for s in stats]))})
    return pd.DataFrame(out, columns=["arm", "round", "problems_solved", "distinct_per_problem", "mean_edit_distance"])


def table_rows(report: Report) -> list[dict]:
    """The seed-style table as records (also the Prefect table artifact)."""
    return [
        {"experiment": report.experiment, "arm": a.arm, "delta_pp": round(a.delta.mean * 100, 2),
         "ci95_pp": f"[{a.delta.low * 100:+.1f}, {a.delta.high * 100:+.1f}]", "p_value": round(a.delta.p_value, 4),
         "vs_" + report.reference: "" if a.vs_reference is None else a.vs_reference.pp(),
         "base_pass1": round(a.base_pass1, 4), "final_pass1": round(a.final_pass1, 4), "seeds": a.seeds,
         "rounds": a.rounds, "run_id": report.run_id, **report.lineage}
        for a in report.arms
    ]


def format_table(report: Report) -> str:
    """The terminal table: Δpp ± half-width of the 95 % interval, vs the reference arm, seeds, rounds."""
    ref = f"vs {report.reference}"
    lines = [f"{'arm':<20} {'Δpp vs base (95% CI)':>22} {'p':>6} {ref:>18} {'base':>6} {'final':>6} {'seeds':>5} {'rounds':>6}"]
    for a in report.arms:
        vs = "-" if a.vs_reference is None else a.vs_reference.pp()
        lines.append(f"{a.arm:<20} {a.delta.pp():>22} {a.delta.p_value:>6.3f} {vs:>18} "
                     f"{a.base_pass1:>6.3f} {a.final_pass1:>6.3f} {a.seeds:>5} {a.rounds:>6}")
    lines.append(f"run {report.run_id}  config {report.lineage['config_hash']}  code {report.lineage['code_version'][:12]}"
                 f"  data {report.lineage['data_hash']}")
    return "\n".join(lines)


def _plots(report: Report) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {}
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for a in report.arms:
        xs = [r for r, _ in a.by_round]
        ax.plot(xs, [e.mean for _, e in a.by_round], marker="o", label=a.arm)
        ax.fill_between(xs, [e.low for _, e in a.by_round], [e.high for _, e in a.by_round], alpha=0.15)
    ax.set(xlabel="round (0 = base model)", ylabel="pass@1 (held-out)", title=f"{report.experiment}: pass@1 by round")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    images["pass_by_round.png"] = _png(fig)
    if report.sweep:
        name, points = report.sweep
        by_arm = {a.arm: a for a in report.arms}
        xs = [v for v, arm in points if arm in by_arm]
        est = [by_arm[arm].delta for _, arm in points if arm in by_arm]
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
        ax.errorbar(xs, [e.mean * 100 for e in est], yerr=[[(e.mean - e.low) * 100 for e in est],
                    [(e.high - e.mean) * 100 for e in est]], marker="o", capsize=4)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xlabel=name, ylabel="Δpp vs base (95% CI)", title=f"sweep over {name}")
        if name.endswith("lr"):
            ax.set_xscale("log")
        images["sweep.png"] = _png(fig)
    return images


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_"
    cols = list(df.columns)
    def fmt(v) -> str:
        if isinstance(v, float):
            return str(int(v)) if v.is_integer() and abs(v) >= 1 else f"{v:.3f}"
        return str(v)

    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


def to_markdown(report: Report, image_dir: str | None = ".") -> str:
    seed = f"\nThe original sprint measured: **{report.seed_result}**\n" if report.seed_result else ""
    parts = [
        f"# {report.experiment} — run `{report.run_id}`\n{seed}",
        "Δpp: last round minus the base model (round 0) on the same seeds and held-out problems; 95 % interval "
        "from a paired bootstrap over seeds and problems; p from the same bootstrap. "
        f"`vs {report.reference}`: the arm's last round minus the reference arm's, paired the same way.\n",
        _md_table(pd.DataFrame(table_rows(report)).drop(columns=["experiment", "run_id", "status"])
                  .assign(code_version=lambda df: df.code_version.str[:12])),
        f"\nLineage: config `{report.lineage['config_hash']}`, code `{report.lineage['code_version']}`, "
        f"data `{report.lineage['data_hash']}`. Query: `pidistill sql \"select * from summary where run_id = "
        f"'{report.run_id}'\"`.\n",
        "## pass@1 by round\n",
        _md_table(pd.DataFrame([{"arm": a.arm, "round": r, "pass1": e.mean, "ci_low": e.low, "ci_high": e.high,
                                 "seeds": e.n_seeds} for a in report.arms for r, e in a.by_round])),
    ]
    if image_dir is not None:
        parts.append("![pass@1 by round](pass_by_round.png)")
    if report.sweep:
        parts.append(f"## Sweep over `{report.sweep[0]}`")
        if image_dir is not None:
            parts.append("![sweep](sweep.png)")
    parts += [
        "## Accepted and rejected training attempts", _md_table(report.rejects),
        "## Compute per arm (all seeds and rounds)", _md_table(report.compute),
        "## Path diversity of correct training attempts", _md_table(report.diversity),
    ]
    return "\n\n".join(p.strip("\n") for p in parts) + "\n"


def to_html(report: Report) -> str:
    """One self-contained page: the markdown's tables as HTML, plots embedded as PNG data."""
    body = []
    for block in to_markdown(report, image_dir=None).split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        if lines[0].startswith("|"):
            head = [c.strip() for c in lines[0].strip("|").split("|")]
            rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
            body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
            continue
        for ln in lines:
            if ln.startswith("#"):
                level = len(ln) - len(ln.lstrip("#"))
                body.append(f"<h{level}>{html.escape(ln.lstrip('#').strip())}</h{level}>")
                if ln.startswith("## pass@1 by round") or ln.startswith("## Sweep"):
                    name = "pass_by_round.png" if "pass@1" in ln else "sweep.png"
                    if name in report.images:
                        data = base64.b64encode(report.images[name]).decode()
                        body.append(f'<img alt="{name}" src="data:image/png;base64,{data}">')
            elif ln.strip():
                body.append(f"<p>{html.escape(ln).replace('**', '')}</p>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
             "th{background:#f3f3f3}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.experiment)} "
            f"{html.escape(report.run_id)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>")


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
