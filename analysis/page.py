"""A report as data (a typed view model) and its two renderers, markdown and HTML, by Jinja templates.

    >>> page = report_page(build_report(run_id))   # analysis.report: the numbers and words -> ReportPage
    >>> render_markdown(page)                      # report.md, linking the PNGs written beside it
    >>> render_html(page)                          # report.html: PNGs embedded, every cell escaped

One page (abridged):

    ReportPage(run_id="demo-...", experiment="demo", lineage={"config_hash": "9f1c...", ...}, sections=[
        Section(heading=(Span("demo — run "), Span("demo-...", "code")), level=1, blocks=[
            Paragraph((Span("Δpp: last round minus the base model ..."),)),
            Table(headers=["arm", "delta_pp", ...], rows=[["rft", "4.380", ...]]), ...]),
        Section(heading=(Span("pass@1 by round"),), level=2, blocks=[Table(...), Image("pass_by_round.png", ...)]),
        ...])

Words and numbers are decided before rendering; the templates (analysis/templates/report.{md,html}.j2)
only lay them out, so the two files cannot disagree and a `|` or `<` in a cell is just text.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from analysis.tables import Table

TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class Span:
    """A run of inline text: plain, `code` or **strong**."""

    text: str
    style: Literal["plain", "code", "strong"] = "plain"


Text = tuple[Span, ...]


def text(*parts: str | Span) -> Text:
    """Inline text from strings (plain) and spans: text("config ", code(h), ".")."""
    return tuple(p if isinstance(p, Span) else Span(p) for p in parts)


def code(s: object) -> Span:
    return Span(str(s), "code")


def strong(s: object) -> Span:
    return Span(str(s), "strong")


@dataclass(frozen=True)
class Paragraph:
    spans: Text
    kind: Literal["paragraph"] = "paragraph"


@dataclass(frozen=True)
class Image:
    """A plot: a PNG file beside report.md, embedded as data in report.html."""

    name: str
    alt: str
    png: bytes
    kind: Literal["image"] = "image"

    @property
    def base64(self) -> str:
        return base64.b64encode(self.png).decode()


@dataclass(frozen=True)
class Preformatted:
    """Text shown exactly, line breaks and spaces kept (a prompt, a completion): a fenced block / <pre>."""

    label: str
    body: str
    kind: Literal["pre"] = "pre"

    @property
    def fence(self) -> str:
        """A markdown fence longer than any run of backticks in the body, so the body cannot close it."""
        longest = max((len(run) for run in self.body.split("\n") for run in _backtick_runs(run)), default=0)
        return "`" * max(3, longest + 1)


def _backtick_runs(line: str) -> list[str]:
    runs, current = [], ""
    for ch in line:
        if ch == "`":
            current += ch
        elif current:
            runs.append(current)
            current = ""
    return runs + ([current] if current else [])


Block = Paragraph | Table | Image | Preformatted


@dataclass(frozen=True)
class Section:
    heading: Text
    level: int = 2
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class ReportPage:
    run_id: str
    experiment: str
    lineage: dict[str, str]  # config_hash, code_version, data_hash, status
    sections: list[Section]


_ENV = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html.j2"], default_for_string=False),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=StrictUndefined,
)


def render_markdown(page: ReportPage, link_images: bool = True) -> str:
    """report.md; `link_images=False` leaves the plots out (a Prefect artifact has no files beside it)."""
    return _ENV.get_template("report.md.j2").render(page=page, link_images=link_images).rstrip("\n") + "\n"


def render_html(page: ReportPage) -> str:
    """One self-contained page: tables as HTML tables (cells escaped), plots embedded as PNG data."""
    return _ENV.get_template("report.html.j2").render(page=page)
