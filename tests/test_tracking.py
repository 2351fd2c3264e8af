"""energybench.Tracker around your own code: windows, readings, failed rows, and rows the report reads."""

from __future__ import annotations

import time

import pytest
import torch

import energybench
from energybench.cli import main as cli_main
from energybench.results import read_rows
from energybench.tracking import WindowError

CHEAP = {"host_energy": False}  # CodeCarbon's start costs seconds; the host tracker has its own tests


def test_a_tracker_around_a_toy_loop_writes_a_row_the_report_renders(tmp_path):
    model = torch.nn.Linear(4, 2)
    x = torch.randn(8, 4)
    t0 = time.perf_counter()
    with energybench.Tracker(output_dir=tmp_path, label="toy-linear", model=model, measure=CHEAP,
                             loss_fn=lambda m: m(x).pow(2).mean()) as s:
        with s.window("train"):
            for _ in range(5):
                model(x).sum().backward()
            time.sleep(0.05)
        with s.window("eval"):
            time.sleep(0.02)
    outer = time.perf_counter() - t0
    rows = read_rows(tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok" and row["method"] == "toy-linear" and row["backbone"] == "Linear"
    assert 0.05 <= row["windows"]["train"]["wall_s"] <= outer
    assert 0.02 <= row["windows"]["eval"]["wall_s"] <= outer
    assert (row["trainable_params"], row["total_params"]) == (10, 10)  # 4·2 weights + 2 biases
    acc = row["accounting"]
    assert acc["mem_params_bytes"] == 40 and acc["mem_grads_bytes"] == 40  # 10 float32 each
    assert acc["mem_model_bytes"] >= 40 + 40 + 80  # + AdamW's two moments
    assert row["windows"]["train"]["gpu_energy_kwh"] is None and row["windows"]["train"]["reasons"]["gpu_energy_kwh"]
    assert cli_main(["report", str(tmp_path), "--format", "md"]) == 0
    assert "toy-linear" in (tmp_path / "report.md").read_text()
    assert cli_main(["compare", str(tmp_path), str(tmp_path), "--format", "json", "-o", str(tmp_path / "c.json")]) == 0


def test_an_exception_in_a_window_records_a_failed_row_and_is_reraised(tmp_path):
    with pytest.raises(ValueError, match="boom"):
        with energybench.Tracker(output_dir=tmp_path, label="crash", measure=CHEAP) as s:
            with s.window("train"):
                time.sleep(0.01)
                raise ValueError("boom")
    (row,) = read_rows(tmp_path)
    assert row["status"] == "failed"
    assert row["error"] == "ValueError in window 'train': boom"
    assert "raise ValueError" in row["traceback_tail"]
    assert row["windows"]["train"]["wall_s"] >= 0.01  # the window was closed and kept
    assert s._open is None


def test_nested_overlapping_and_repeated_windows_are_clear_errors(tmp_path):
    with energybench.Tracker(output_dir=tmp_path, label="w", measure=CHEAP) as s:
        with s.window("train"):
            with pytest.raises(WindowError, match=r"'eval' opened while window 'train' is still open"):
                with s.window("eval"):
                    pass
            with pytest.raises(WindowError, match="not the open window"):
                s.end_window("eval")
        with pytest.raises(WindowError, match="already measured"):
            s.begin_window("train")
    with pytest.raises(WindowError, match="inside `with energybench.Tracker"):
        energybench.Tracker(output_dir=tmp_path, label="x").begin_window("train")
    (row,) = read_rows(tmp_path)
    assert row["status"] == "ok" and list(row["windows"]) == ["train"]


def test_reading_gives_the_figures_so_far_without_closing_the_window(tmp_path):
    with energybench.Tracker(output_dir=tmp_path, label="r", measure=CHEAP) as s:
        with s.window("train"):
            time.sleep(0.05)
            first = s.reading()["train"]
            time.sleep(0.05)
            second = s.reading()["train"]
        final = s.windows["train"]
    assert first["partial"] is True and first["wall_s"] >= 0.05
    assert second["wall_s"] >= 0.1 and second["wall_s"] > first["wall_s"]
    assert final["wall_s"] >= second["wall_s"]
    assert second["gpu_energy_kwh"] is None and second["reasons"]["gpu_energy_kwh"]
    assert "partial" not in final


def test_import_energybench_stays_light():
    import subprocess
    import sys

    code = "import sys, energybench; print('torch' in sys.modules, energybench.Tracker.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "energybench.tracking"]


def test_each_rank_writes_its_own_row(tmp_path, monkeypatch):
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", rank)
        with energybench.Tracker(output_dir=tmp_path, label="ddp", measure=CHEAP) as s:
            with s.window("train"):
                pass
    rows = read_rows(tmp_path)
    assert [r["config"]["rank"] for r in rows] == [0, 1]
    assert len({r["run_id"] for r in rows}) == 2
    assert [r["environment"]["local_rank"] for r in rows] == ["0", "1"]


def test_an_exception_outside_any_window_still_writes_a_failed_row(tmp_path):
    with pytest.raises(RuntimeError, match="setup"):
        with energybench.Tracker(output_dir=tmp_path, label="early", measure=CHEAP) as s:
            s.begin_window("train")  # left open by the failure below
            raise RuntimeError("setup broke")
    (row,) = read_rows(tmp_path)
    assert row["status"] == "failed" and row["error"] == "RuntimeError: setup broke"
    assert "train" in row["windows"]  # the open window was closed and kept
