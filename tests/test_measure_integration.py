"""The power integral and READ's dense estimate on a trace where trapezoid, left and right sums differ.

Power 100 / 300 / 100 W at t = 0, 1, 3 s:
  trapezoid (100+300)/2·1 + (300+100)/2·2 = 200 + 400 = 600 J
  left Riemann 100·1 + 300·2 = 700 J, right Riemann 300·1 + 100·2 = 500 J.
Utilization 20 / 80 / 40 % at the same instants; NVML's value describes the time *before* it was read, so
each interval is weighed by the sample at its end: 0.8·1 + 0.4·2 = 1.6 busy seconds (weighing by the
previous sample would give 0.2·1 + 0.8·2 = 1.8).
"""

from __future__ import annotations

import pytest
from test_measure_nvml import UUID_A, Board, Clock, make_tracker, run_window

from energybench.measure.gpu_integration import DeviceWindow
from energybench.measure.read_estimate import ReadBusyTime

KWH = 3.6e6
TIMES = [0.0, 1.0, 3.0]
POWER_W = {0.0: 100.0, 1.0: 300.0, 3.0: 100.0}
UTIL = {0.0: 20.0, 1.0: 80.0, 3.0: 40.0}


def test_device_window_integrates_power_by_the_trapezoid_rule():
    w = DeviceWindow(t0=0.0)
    for t in TIMES:
        w.add(t, UTIL[t], POWER_W[t] * 1000, None, None)
    assert w.p_integral_mj == pytest.approx(600_000.0)  # mJ: not 700 000 (left) nor 500 000 (right)
    assert (w.p_n, w.p_first_t, w.p_last_t, w.p_max_mw) == (3, 0.0, 3.0, 300_000.0)
    assert w.u_n == 3 and w.u_sum == pytest.approx(140.0)


def test_tracker_reports_the_trapezoid_energy_and_time_weighted_mean_power():
    clock = Clock()
    tracker = make_tracker([Board(UUID_A, power_w=lambda t: POWER_W[t], util=lambda t: UTIL[t])], clock,
                           nvml_min_samples=2, p0_kw=0.3)
    f = run_window(tracker, clock, TIMES)
    assert f.values["gpu_energy_power_kwh"] == pytest.approx(600.0 / KWH, rel=1e-9)
    assert f.values["gpu_power_mean_w"] == pytest.approx(200.0)  # 600 J over 3 s; the sample mean is 166.7
    assert f.values["gpu_power_max_w"] == pytest.approx(300.0)
    assert f.values["gpu_sample_interval_mean_s"] == pytest.approx(1.5)
    assert f.values["gpu_util_mean_pct"] == pytest.approx(140.0 / 3)
    # READ, dense: p0 · 1.6 s
    assert f.values["gpu_energy_read_kwh"] == pytest.approx(0.3 * 1.6 / 3600, rel=1e-9)
    assert "2 utilization samples" in f.reasons["gpu_energy_read_kwh"]


def test_read_dense_weighs_each_interval_by_the_sample_at_its_end():
    r = ReadBusyTime(t0=0.0)
    for t in TIMES:
        r.add(t, UTIL[t])
    assert r.read_busy_s() == pytest.approx(1.6)
    assert r.read_samples == 2  # the first sample only opens the window


def test_read_grid_protocol_takes_the_first_sample_at_or_after_each_period():
    r = ReadBusyTime(t0=0.0, read_period_s=2.0)
    for t, u in [(1.0, 10.0), (2.0, 50.0), (3.0, 70.0), (4.5, 30.0), (5.0, 90.0)]:
        r.add(t, u)
    # grid instants 2 and 4: taken at 2.0 (50 %) and 4.5 (30 %), 2 s each; then 4→5 s at the last sample, 90 %
    assert r.read_busy_s() == pytest.approx(0.5 * 2 + 0.3 * 2 + 0.9 * 1.0)
    assert r.read_samples == 3


def test_read_error_is_against_the_counter_with_the_same_trace():
    clock = Clock()
    board = Board(UUID_A, power_w=lambda t: POWER_W[t], util=lambda t: UTIL[t], energy_j=lambda t: 250.0 * t)
    f = run_window(make_tracker([board], clock, p0_kw=0.3), clock, TIMES)
    read_kwh, counter_kwh = 0.3 * 1.6 / 3600, 250.0 * 3 / KWH
    assert f.values["gpu_energy_kwh"] == pytest.approx(counter_kwh)
    assert f.values["read_estimate_error_pct"] == pytest.approx(100 * (read_kwh - counter_kwh) / counter_kwh)


def test_failed_reads_at_the_window_ends_make_it_low_confidence_saying_how_much_was_covered():
    clock = Clock()
    ends = [("energy", 10.0), ("energy", 14.0), ("power", 10.0), ("power", 13.0), ("power", 14.0)]
    board = Board(UUID_A, energy_j=lambda t: 100.0 * t, fail=ends)
    tracker = make_tracker([board], clock, nvml_min_samples=2)  # probed at t = 0, where every read works
    f = run_window(tracker, clock, [10.0, 11.0, 12.0, 13.0, 14.0])
    # counter read at 11, 12, 13 s: 2 s of a 4 s window; power at 11 and 12 s: 1 s of it
    assert f.values["gpu_energy_kwh"] == pytest.approx(200.0 / KWH)
    assert f.values["gpu_energy_low_confidence"] is True
    reason = f.reasons["gpu_energy_low_confidence"]
    assert "energy-counter readings span 50% of the window (failed reads at its ends)" in reason
    assert "power samples span 25% of the window" in reason
    assert f.values["nvml_errors"] == 5


def test_memory_peak_is_the_largest_sample_of_the_window():
    clock = Clock()
    mem = {0.0: 3 * 2 ** 30, 1.0: 5 * 2 ** 30, 3.0: 2 ** 30}
    f = run_window(make_tracker([Board(UUID_A, mem=lambda t: mem[t])], clock), clock, TIMES)
    assert f.values["peak_gpu_mem_nvml_bytes"] == 5 * 2 ** 30
    assert f.provenance["peak_gpu_mem_nvml_bytes"] == "measured"


def test_read_grid_protocol_counts_periods_from_the_window_start_not_from_zero():
    r = ReadBusyTime(t0=100.0, read_period_s=2.0)
    for t, u in [(101.0, 10.0), (102.0, 50.0), (103.0, 70.0), (104.5, 30.0), (105.0, 90.0)]:
        r.add(t, u)
    # the same trace as above, 100 s later: the same busy time and the same 3 samples
    assert r.read_busy_s() == pytest.approx(0.5 * 2 + 0.3 * 2 + 0.9 * 1.0)
    assert r.read_samples == 3


def test_two_counter_readings_suffice_and_a_counter_that_stands_still_gives_zero_not_null():
    clock = Clock()
    f = run_window(make_tracker([Board(UUID_A, energy_j=lambda t: 500.0)], clock), clock, [0.0, 3.0])
    assert f.values["gpu_energy_kwh"] == 0.0  # read at the window's start and end only; equal readings
    assert f.provenance["gpu_energy_kwh"] == "measured"


def test_a_counter_that_failed_every_read_names_the_error_instead_of_no_reading():
    clock = Clock()
    board = Board(UUID_A, fail=[("energy", 1.0), ("energy", 2.0)])
    f = run_window(make_tracker([board], clock), clock, [1.0, 2.0])
    assert f.values["gpu_energy_kwh"] is None
    reason = f.reasons["gpu_energy_kwh"]
    assert reason.endswith("fewer than two energy-counter readings on cuda:0 "
                           "(nvmlDeviceGetTotalEnergyConsumption: GPU is lost)"), reason


def test_power_samples_at_one_instant_give_the_last_power_as_the_mean():
    clock = Clock()
    f = run_window(make_tracker([Board(UUID_A, power_w=lambda t: 120.0)], clock, nvml_min_samples=2), clock, [2.0, 2.0])
    assert f.values["gpu_sample_count"] == 2
    assert f.values["gpu_power_mean_w"] == pytest.approx(120.0)  # no time elapsed: nothing to divide by
