"""The report's plots, as PNG bytes: pass@1 by round per arm, and the sweep curve when the arms form one.

>>> report_plots(report)    # {"pass_by_round.png": b"\\x89PNG...", "sweep.png": ...}
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analysis.report import Report


def report_plots(report: Report) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    images = {}
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for a in report.arms:
        xs = [r for r, _ in a.by_round]
        ax.plot(xs, [e.mean for _, e in a.by_round], marker="o", label=a.arm)
        ax.fill_between(xs, [e.low for _, e in a.by_round], [e.high for _, e in a.by_round], alpha=0.15)
    ax.set(
        xlabel="round (0 = base model)",
        ylabel="pass@1 (held-out)",
        title=f"{report.experiment}: pass@1 by round (bands: 95 % intervals)",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    images["pass_by_round.png"] = _png(fig)
    if report.sweep:
        name, points = report.sweep
        by_arm = {a.arm: a for a in report.arms}
        swept = [v for v, arm in points if arm in by_arm]
        est = [by_arm[arm].delta for _, arm in points if arm in by_arm]
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
        ax.errorbar(
            swept,
            [e.mean * 100 for e in est],
            yerr=[[(e.mean - e.low) * 100 for e in est], [(e.high - e.mean) * 100 for e in est]],
            marker="o",
            capsize=4,
        )
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
