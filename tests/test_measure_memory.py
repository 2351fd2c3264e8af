"""Per-window memory peaks: the fold-and-reset logic, real peak RSS, CUDA nulls without CUDA."""

from __future__ import annotations

import psutil
import pytest
import torch

import energybench.measure.memory as memory
from energybench.measure.memory import MemoryTracker, _FoldedPeak
from energybench.measure.settings import MeasureSettings

MB = 2 ** 20


def test_folded_peak_gives_nested_windows_their_own_maxima():
    level = {"now": 10, "peak": 10}

    def touch(v):  # the process's usage changes; the resettable peak follows it up
        level["now"] = v
        level["peak"] = max(level["peak"], v)

    def reset():
        level["peak"] = level["now"]

    peak = _FoldedPeak(lambda: level["peak"], reset)
    peak.begin("train")
    touch(50)
    touch(20)
    peak.begin("eval")
    touch(30)
    touch(25)
    assert peak.end("eval") == 30  # the 50 before eval began is not eval's
    touch(40)
    touch(5)
    assert peak.end("train") == 50


def _allocate_and_touch(nbytes: int) -> bytearray:
    buf = bytearray(nbytes)
    buf[::4096] = b"x" * len(buf[::4096])  # touch every page so it is resident
    return buf


def test_peak_rss_is_per_window_and_sees_a_freed_allocation():
    tracker = MemoryTracker(MeasureSettings(), devices=["cpu"])
    tracker.start()
    base = psutil.Process().memory_info().rss
    tracker.begin("train")
    tracker.begin("eval")
    buf = _allocate_and_touch(96 * MB)
    del buf
    eval_peak = tracker.end("eval")
    tracker.begin("inference")
    quiet = tracker.end("inference")
    train = tracker.end("train")
    tracker.stop()
    assert eval_peak.values["peak_rss_bytes"] >= base + 90 * MB
    assert quiet.values["peak_rss_bytes"] < eval_peak.values["peak_rss_bytes"] - 80 * MB
    assert train.values["peak_rss_bytes"] >= eval_peak.values["peak_rss_bytes"]
    assert eval_peak.provenance["peak_rss_bytes"] == "measured"


def test_peak_rss_falls_back_to_sampling_when_the_kernel_reset_is_refused(monkeypatch):
    monkeypatch.setattr(memory, "hwm_reset_works", lambda: "PermissionError: denied")
    tracker = MemoryTracker(MeasureSettings(rss_interval_s=0.01), devices=["cpu"])
    tracker.start()
    base = psutil.Process().memory_info().rss
    tracker.begin("train")
    buf = _allocate_and_touch(64 * MB)
    f = tracker.end("train")
    del buf
    tracker.stop()
    assert f.values["peak_rss_bytes"] >= base + 60 * MB
    assert "sampled every 0.01 s" in f.reasons["peak_rss_bytes"]
    assert "denied" in f.reasons["peak_rss_bytes"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_cuda_peaks_are_null_with_reason_without_cuda():
    tracker = MemoryTracker(MeasureSettings())
    tracker.start()
    tracker.begin("train")
    f = tracker.end("train")
    tracker.stop()
    for name in ("peak_gpu_mem_bytes", "peak_gpu_reserved_bytes"):
        assert f.values[name] is None
        assert f.reasons[name] == "no CUDA device"
