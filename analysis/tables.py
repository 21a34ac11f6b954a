"""Tables as data, and the one place a markdown table is written.

    >>> t = Table.from_frame(pd.DataFrame({"arm": ["rft"], "pass1": [0.41234], "seeds": [3.0]}))
    >>> t.rows
    [['rft', '0.412', '3']]
    >>> signed_pp(0.025), interval_pp(0.0, 0.075), p_text(1.0), p_text(0.00004)
    ('+2.5', '[+0.0, +7.5]', '1.000', '<0.001')
    >>> print(markdown_table(t.headers, t.rows))
    | arm | pass1 | seeds |
    |---|---|---|
    | rft | 0.412 | 3 |

Cells are text by the time they reach a renderer: numbers are formatted once (`cell`), so the
markdown and the HTML report show the same digits. The HTML template escapes cells itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd


def cell(v: object) -> str:
    """The report's number format: floats to 3 decimals (a rate of 1 is '1.000', like its neighbours), missing as
    '-'; whole floats > 1 are counts that pandas widened to float (a column with a gap) and print as integers."""
    if isinstance(v, float):
        if v != v:  # NaN: pandas' missing value
            return "-"
        return str(int(v)) if v.is_integer() and abs(v) > 1 else f"{v:.3f}"
    return str(v)


def signed_pp(fraction: float) -> str:
    """A difference of rates in percentage points, signed, one decimal: 0.025 -> '+2.5'."""
    return f"{fraction * 100:+.1f}"


def interval_pp(low: float, high: float) -> str:
    """An interval of rate differences as its two ends, '[+0.0, +7.5]': a bootstrap interval is seldom symmetric,
    so a '± half-width' would misstate it."""
    return f"[{signed_pp(low)}, {signed_pp(high)}]"


def p_text(p: float) -> str:
    """A p-value to 3 decimals; below 0.001 as '<0.001' (a bootstrap of a few thousand draws resolves no finer)."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _md_cell(text: str) -> str:
    # A bare `|` would end the cell and a newline the row (GitHub-flavoured markdown escapes the pipe).
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table of text cells (no trailing newline)."""
    lines = ["| " + " | ".join(map(_md_cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(str(c)) for c in r) + " |" for r in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Table:
    """A table of the report: column names and rows of formatted cells; no rows renders as '(none)'."""

    headers: list[str]
    rows: list[list[str]]
    kind: Literal["table"] = "table"

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> Table:
        return cls([str(c) for c in df.columns], [[cell(v) for v in r] for r in df.itertuples(index=False)])

    @classmethod
    def from_records(cls, records: list[dict]) -> Table:
        return cls.from_frame(pd.DataFrame(records))

    def markdown(self) -> str:
        return markdown_table(self.headers, self.rows) if self.rows and self.headers else "_(none)_"
