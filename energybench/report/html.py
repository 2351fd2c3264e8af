"""One self-contained HTML page: the report's tables, figures embedded as base64 PNG, footnotes.

No external CSS, scripts or image files, so the page can be mailed or
attached to a CI run and still open in any browser.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html import escape

from energybench.report.empty_columns import EMPTY_COLUMNS_LEAD, collapsed
from energybench.report.plots import Plot
from energybench.report.tables import Footnotes, Table, fmt_pct

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;
color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.3em .55em;text-align:right;vertical-align:top}
th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-size:.9em;color:#555;padding-bottom:.3em}
figure{margin:1em 0 2em}
figcaption{font-size:.88em;color:#555;max-width:900px}
img{max-width:100%;border:1px solid #eee}
.notes li{font-size:.88em;margin:.2em 0}
.skipped{color:#8a4b00}
"""


@dataclass
class Section:
    """One backbone's part of the page (or a general part when ``tables`` is empty)."""

    heading: str
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


def _cell_html(item, notes: Footnotes) -> str:
    if isinstance(item, str):
        return escape(item)
    cell, kind, scale, show_pct = item
    txt = (fmt_pct(cell.mean) if cell.mean is not None else "—") if kind == "pct" else cell.text(kind, scale, show_pct)
    return escape(txt) + _marks_html(notes.numbers(cell.notes))


def _marks_html(nums: list[int]) -> str:
    return "".join(f'<sup><a href="#note-{n}">{n}</a></sup>' for n in nums)


def table_html(table: Table, notes: Footnotes) -> str:
    table, dropped = collapsed(table)
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{_cell_html(c, notes)}</td>" for c in row) + "</tr>" for row in table.rows)
    empty = ("" if not dropped else "<p>" + escape(EMPTY_COLUMNS_LEAD) + " " + "; ".join(
        escape(h) + _marks_html(notes.numbers(reasons)) for h, reasons in dropped) + ".</p>")
    return (f'<table class="report-table"><caption><b>{escape(table.title)}.</b> {escape(table.caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{empty}")


def plot_html(plot: Plot) -> str:
    if plot.png is None:
        return f'<p class="skipped"><b>{escape(plot.title)}</b>: not drawn — {escape(plot.why or "")}</p>'
    data = base64.b64encode(plot.png).decode("ascii")
    return (f'<figure><img alt="{escape(plot.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(plot.caption)}</figcaption></figure>")


def render_page(title: str, intro: list[str], sections: list[Section], tail: list[str] | None = None) -> str:
    """The whole page; ``intro``/``text``/``tail`` items are HTML fragments the caller escaped."""
    notes = Footnotes()
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>", *intro]
    for s in sections:
        parts.append(f"<h2>{escape(s.heading)}</h2>")
        parts += s.text
        parts += [table_html(t, notes) for t in s.tables]
        parts += [plot_html(p) for p in s.plots]
    parts += tail or []
    if notes.texts:
        items = "".join(f'<li id="note-{i}">{escape(t)}</li>' for i, t in enumerate(notes.texts, 1))
        parts.append(f'<h2>Notes</h2><ol class="notes">{items}</ol>')
    parts.append("</body></html>")
    return "\n".join(parts)
