"""Columns with no value in any row, collapsed out of the rendered tables into one line naming them.

On a CPU-only grid every GPU figure is null: a column of dashes says less
than one sentence naming the columns and, by footnote, why they are empty.
The CSV exports keep every column (machine-readable files keep their shape).
"""

from __future__ import annotations

import dataclasses

EMPTY_COLUMNS_LEAD = "No value in any row, so not shown:"


def empty_columns(table) -> list[int]:
    """Indices of the columns of ``table`` (report.tables.Table) whose every cell is a dash with its reasons."""
    if not table.rows:
        return []
    return [j for j in range(len(table.header))
            if all(not isinstance(row[j], str) and row[j][0].mean is None for row in table.rows)]


def collapsed(table):
    """(the table without its empty columns, [(header, the reasons its cells give)] for each one dropped)."""
    empty = empty_columns(table)
    if not empty:
        return table, []
    keep = [j for j in range(len(table.header)) if j not in empty]
    dropped = [(table.header[j], list(dict.fromkeys(n for row in table.rows for n in row[j][0].notes)))
               for j in empty]
    return dataclasses.replace(table, header=[table.header[j] for j in keep],
                               rows=[[row[j] for j in keep] for row in table.rows]), dropped
