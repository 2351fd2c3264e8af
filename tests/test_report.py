"""The report's numbers are the means of the rows they summarise."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest

from energybench.report.build import write_report
from energybench.results import append_result


def _row(method, task, seed, score, wall, trainable=10, total=100, status="ok", error=None):
    return {"run_id": f"{method}-{task}-{seed}", "suite": "s", "backbone": "tiny-t5", "task": task, "method": method,
            "method_name": method, "seed": seed, "config": {}, "status": status, "error": error, "score": score,
            "trainable_params": trainable, "total_params": total,
            "windows": {"train": {"wall_s": wall, "provenance": {"wall_s": "measured"}, "reasons": {}}}}


def test_report_cells_equal_means_and_stds_of_the_rows(tmp_path):
    scores = {("lora", "a"): [70.0, 74.0], ("lora", "b"): [50.0, 60.0], ("full_ft", "a"): [90.0, 80.0],
              ("full_ft", "b"): [66.0, 68.0]}
    for (method, task), vals in scores.items():
        for seed, v in enumerate(vals):
            append_result(tmp_path / "results.jsonl", _row(method, task, seed, v, wall=10.0 + seed))
    append_result(tmp_path / "results.jsonl", _row("bitfit", "a", 0, None, 0, status="failed", error="boom"))
    write_report([tmp_path], tmp_path)
    table = pd.read_csv(tmp_path / "report.csv").set_index("method")
    assert table.loc["lora", "a_mean"] == pytest.approx(72.0)
    assert table.loc["lora", "a_std"] == pytest.approx(statistics.stdev([70.0, 74.0]))
    # average per seed over tasks, then mean over seeds: (70+50)/2=60, (74+60)/2=67 → 63.5
    assert table.loc["lora", "average_mean"] == pytest.approx(63.5)
    assert table.loc["full_ft", "average_mean"] == pytest.approx(((90 + 66) / 2 + (80 + 68) / 2) / 2)
    assert table.loc["lora", "trainable_pct_mean"] == pytest.approx(10.0)
    assert table.loc["lora", "train_time_s_mean"] == pytest.approx(10.5)
    md = (tmp_path / "report.md").read_text()
    assert "| lora | 72.00 ± 2.83 | 55.00 ± 7.07 | 63.50 ± 4.95 |" in md
    assert "### Failed runs" in md and "| tiny-t5 | a | bitfit | 0 | boom |" in md


def test_rows_follow_the_suites_method_order_not_the_order_runs_finished(tmp_path):
    # With --jobs or Ray, runs finish in any order; the table must list methods as the suite does.
    (tmp_path / "suite.json").write_text('{"methods": [{"name": "full_ft"}, {"name": "lora", "label": "lora-r8"}, '
                                         '{"name": "bitfit"}]}', encoding="utf-8")
    for method in ("bitfit", "extra", "lora-r8", "full_ft"):
        append_result(tmp_path / "results.jsonl", _row(method, "a", 0, 50.0, wall=1.0))
    write_report([tmp_path], tmp_path, baseline_method="none")
    assert list(pd.read_csv(tmp_path / "report.csv")["method"]) == ["full_ft", "lora-r8", "bitfit", "extra"]
    assert list(pd.read_csv(tmp_path / "efficiency.csv")["method"]) == ["full_ft", "lora-r8", "bitfit", "extra"]
