"""Meter.reading: the figures of an open window so far, without ending it (cost to target's cumulative points)."""

from __future__ import annotations

import time

import pytest
from test_measure_nvml import KWH, UUID_A, Board, Clock, make_tracker

from energybench.measure.host import HostEnergyTracker
from energybench.measure.meter import Meter
from energybench.measure.settings import MeasureSettings


def test_gpu_reading_is_the_energy_so_far_and_leaves_the_window_intact():
    clock = Clock()
    tracker = make_tracker([Board(UUID_A, energy_j=lambda t: 5000.0 + 250.0 * t)], clock)
    clock.t = 2.0
    tracker.begin("train")
    clock.t = 3.0
    mid = tracker.reading("train")
    assert mid.values["gpu_energy_kwh"] == pytest.approx(250.0 * 1.0 / KWH, rel=1e-9)
    clock.t = 5.0
    end = tracker.end("train")
    assert end.values["gpu_energy_kwh"] == pytest.approx(250.0 * 3.0 / KWH, rel=1e-9)
    # the reading's sample went into the window too: 3 samples (begin, reading, end)
    assert end.values["gpu_sample_count"] == 3


class Totals:
    """CodeCarbon's cumulative CPU and RAM kWh, scripted."""

    def __init__(self, values):
        self.values = list(values)

    def now(self):
        return self.values.pop(0)

    def scope(self):  # issue 17: which share of the host the totals cover
        return "process"


def test_host_reading_is_the_difference_from_the_window_start_and_keeps_its_mark():
    tracker = HostEnergyTracker(MeasureSettings())
    tracker.cc = Totals([(1.0, 0.5), (1.25, 0.75), (2.0, 1.5)])
    tracker._method = ("cpu: test", "measured", "scripted", "scripted")
    tracker.begin("train")
    mid = tracker.reading("train")
    assert (mid.values["cpu_energy_kwh"], mid.values["ram_energy_kwh"]) == pytest.approx((0.25, 0.25))
    end = tracker.end("train")
    assert (end.values["cpu_energy_kwh"], end.values["ram_energy_kwh"]) == pytest.approx((1.0, 1.0))


def test_meter_reading_grows_and_does_not_end_the_window():
    meter = Meter()
    with meter:
        with pytest.raises(RuntimeError, match="not open"):
            meter.reading("train")
        meter.begin_window("train")
        first = meter.reading("train")["wall_s"]
        time.sleep(0.01)
        second = meter.reading("train")["wall_s"]
        assert 0 <= first < second
        final = meter.end_window("train")["wall_s"]
        assert final >= second
