"""Report cells as units: % of the baseline, and a seed missing a task, against numbers worked out here."""

from __future__ import annotations

import pandas as pd
import pytest

from energybench.report.tables import Cell, summarize, with_pct


def test_percent_of_the_baseline_and_why_it_cannot_be_computed():
    assert with_pct(Cell(mean=3.0), Cell(mean=1.0), "full_ft", "energy").pct == pytest.approx(300.0)
    assert with_pct(Cell(mean=3.0), Cell(mean=4.0), "full_ft", "energy").pct == pytest.approx(75.0)
    zero = with_pct(Cell(mean=3.0), Cell(mean=0.0), "full_ft", "energy")  # no division by zero
    assert zero.pct is None and zero.notes == ["no % of full_ft for energy: the full_ft value is missing"]
    none = with_pct(Cell(mean=3.0), None, "full_ft", "energy")
    assert none.pct is None and "no full_ft runs on this backbone" in none.notes[0]
    assert with_pct(Cell(), Cell(mean=2.0), "full_ft", "energy").pct is None


def test_summary_over_seeds_of_values_combined_over_tasks():
    g = pd.DataFrame({"seed": [0, 0, 1, 1, 2], "task": ["a", "b", "a", "b", "a"],
                      "x": [1.0, 3.0, 2.0, 6.0, 5.0]})
    cell = summarize(g, "x", ["a", "b"], combine="sum")  # seed 0: 4, seed 1: 8; seed 2 lacks task b
    assert (cell.mean, cell.n, cell.n_total) == (pytest.approx(6.0), 2, 3)
    assert cell.std == pytest.approx(2 ** 0.5 * 2)  # sample std of 4 and 8
    assert cell.notes == ["mean over 2 of 3 seeds; the others lack it: seed 2 has no finished run of b "
                          "(see Failed runs)"]
    mean = summarize(g, "x", ["a", "b"])  # per seed: the mean over tasks, 2 and 4
    assert mean.mean == pytest.approx(3.0)
    one = summarize(g[g["seed"] == 0], "x", ["a"])
    assert (one.mean, one.std, one.notes) == (1.0, None, [])


def test_the_mean_over_tasks_keeps_fractions_and_cells_are_noisy_unless_told_exact():
    g = pd.DataFrame({"seed": [0, 0], "task": ["a", "b"], "x": [1.0, 2.0]})
    cell = summarize(g, "x", ["a", "b"])
    assert cell.mean == pytest.approx(1.5) and cell.std is None
    assert cell.exact is False and summarize(g, "x", ["a", "b"], exact=True).exact is True
