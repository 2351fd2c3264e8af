"""Labels and errors come from users' suites and runs: escape them before they go into Markdown, HTML or a spreadsheet.

- Markdown: ``<``/``>``/``&`` become HTML entities (report.md renders raw HTML
  otherwise: a label ``<img src=x onerror=...>`` would run in a viewer), and
  the characters that open links, code or emphasis or end a table cell are
  backslash-escaped.
- CSV: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
  return is a formula to Excel and LibreOffice; OWASP's "CSV Injection"
  advice is to prefix such a cell with a single quote, which we do for text
  cells only (a negative *number* stays a number).
"""

from __future__ import annotations

import re

import pandas as pd

_MD_SPECIAL = re.compile(r"([\\`*\[\]|])")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def md_text(s: object) -> str:
    """``s`` as literal text inside a Markdown table cell or line."""
    t = str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", t).replace("\r", " ").replace("\n", " ")


def csv_cell(v: object) -> object:
    """A text cell a spreadsheet would evaluate gets a leading ``'``; everything else is unchanged."""
    if isinstance(v, str) and v.startswith(FORMULA_START):
        return "'" + v
    return v


def csv_text(df: pd.DataFrame) -> str:
    """The frame as CSV text with formula-like text cells neutralised (see :func:`csv_cell`)."""
    if df.empty:
        return df.to_csv(index=False)
    safe = df.copy()
    for c in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[c]):
            safe[c] = safe[c].map(csv_cell)
    safe.columns = [csv_cell(c) for c in safe.columns]
    return safe.to_csv(index=False)
