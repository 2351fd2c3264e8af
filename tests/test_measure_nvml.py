"""NVML sampler, window energy math, device mapping: against a fake NVML that replays a scripted trace.

The fake exposes the pynvml functions the sampler calls; its readings are
functions of a clock the test sets, and the test drives ``sample_once`` at
chosen instants, so every expected number is computed by hand here.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from energybench.measure.devices import (
    cuda_ordinals,
    parse_visible_devices,
    resolve_gpus,
)
from energybench.measure.meter import Meter
from energybench.measure.nvml import GPU_FIELDS, GpuEnergyTracker
from energybench.measure.settings import MeasureSettings

KWH = 3.6e6  # J per kWh
UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444"
UUID_C = "GPU-cccccccc-1111-2222-3333-444444444444"


class FakeNVMLError(Exception):
    TEXT = {3: "Not Supported", 12: "NVML Shared Library Not Found", 15: "GPU is lost"}

    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self):
        return self.TEXT.get(self.value, f"NVML error {self.value}")


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Board:
    """One fake GPU: readings are functions of time (W, %, J, bytes); ``fail`` holds (call, t) pairs that raise."""

    def __init__(self, uuid, power_w=lambda t: 100.0, util=lambda t: 50.0, energy_j=lambda t: 1000.0 + 100.0 * t,
                 mem=lambda t: 2 ** 30, limit_w=250.0, counter=True, instant=True, fail=(), pids=(), mig=None):
        self.uuid, self.power_w, self.util, self.energy_j, self.mem = uuid, power_w, util, energy_j, mem
        self.limit_w, self.counter, self.instant, self.fail, self.pids = limit_w, counter, instant, set(fail), pids
        self.mig = mig  # for a MIG instance handle: its parent board


class FakeNvml:
    NVML_SUCCESS = 0
    NVML_FI_DEV_POWER_INSTANT = 186
    NVMLError = FakeNVMLError

    def __init__(self, boards, clock, migs=None):
        self.boards, self.clock, self.migs = boards, clock, migs or {}
        self.calls = 0

    def _check(self, h, name):
        self.calls += 1
        if (name, self.clock()) in h.fail:
            raise FakeNVMLError(15)

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.boards)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.boards[i]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for b in [*self.boards, *self.migs.values()]:
            if b.uuid == uuid:
                return b
        raise FakeNVMLError(13)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h):
        return h.mig

    def nvmlDeviceGetUUID(self, h):
        return h.uuid

    def nvmlDeviceGetName(self, h):
        return "Fake V100"

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._check(h, "energy")
        if not h.counter:
            raise FakeNVMLError(3)
        return int(round(1000 * h.energy_j(self.clock())))

    def nvmlDeviceGetFieldValues(self, h, ids):
        self._check(h, "power")
        ok = h.instant and ids == [self.NVML_FI_DEV_POWER_INSTANT]
        mw = int(round(1000 * h.power_w(self.clock())))
        return [SimpleNamespace(nvmlReturn=0 if ok else 3, valueType=1, value=SimpleNamespace(uiVal=mw))]

    def nvmlDeviceGetPowerUsage(self, h):
        self._check(h, "power")
        return int(round(1000 * h.power_w(self.clock())))

    def nvmlDeviceGetUtilizationRates(self, h):
        self._check(h, "util")
        return SimpleNamespace(gpu=h.util(self.clock()), memory=0)

    def nvmlDeviceGetMemoryInfo(self, h):
        self._check(h, "mem")
        return SimpleNamespace(used=h.mem(self.clock()), total=16 * 2 ** 30)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h):
        return int(h.limit_w * 1000)

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=p, usedGpuMemory=0) for p in h.pids]


def make_tracker(boards, clock, uuids=None, **settings):
    nvml = FakeNvml(boards, clock)
    uuids = uuids or [b.uuid for b in boards]
    tracker = GpuEnergyTracker(MeasureSettings(**settings), devices=list(range(len(uuids))), nvml=nvml, clock=clock,
                               background=False, env={}, cuda_uuid=lambda i: uuids[i][4:])
    tracker.start()
    return tracker


def run_window(tracker, clock, times, name="train"):
    """Begin at times[0], sample at the inner times, end at times[-1]."""
    clock.t = times[0]
    tracker.begin(name)
    for t in times[1:-1]:
        clock.t = t
        tracker.sampler.sample_once()
    clock.t = times[-1]
    return tracker.end(name)


# ------------------------------------------------------------- energy math
def test_counter_delta_is_the_window_energy():
    clock = Clock()
    tracker = make_tracker([Board(UUID_A, energy_j=lambda t: 5000.0 + 250.0 * t)], clock)
    f = run_window(tracker, clock, [2.0, 2.5, 3.0, 4.0, 5.0])
    assert f.values["gpu_energy_kwh"] == pytest.approx(250.0 * 3.0 / KWH, rel=1e-9)
    assert f.provenance["gpu_energy_kwh"] == "measured"
    assert f.values["gpu_energy_low_confidence"] is False


def test_trapezoid_integral_matches_hand_computed_value():
    clock = Clock()
    power = {0.0: 100.0, 1.0: 200.0, 3.0: 150.0, 3.5: 150.0}
    tracker = make_tracker([Board(UUID_A, power_w=lambda t: power[t])], clock, nvml_min_samples=2)
    f = run_window(tracker, clock, [0.0, 1.0, 3.0, 3.5])
    # (100+200)/2·1 + (200+150)/2·2 + (150+150)/2·0.5 = 150 + 350 + 75 = 575 J
    assert f.values["gpu_energy_power_kwh"] == pytest.approx(575.0 / KWH, rel=1e-9)
    assert f.provenance["gpu_energy_power_kwh"] == "integrated"
    assert f.values["gpu_power_mean_w"] == pytest.approx(575.0 / 3.5)
    assert f.values["gpu_power_max_w"] == pytest.approx(200.0)
    assert f.values["gpu_sample_count"] == 4
    assert f.values["gpu_sample_interval_mean_s"] == pytest.approx(3.5 / 3)
    assert f.values["gpu_power_source"] == "instant"


def test_power_falls_back_to_the_averaged_reading_and_says_so():
    clock = Clock()
    tracker = make_tracker([Board(UUID_A, instant=False)], clock)
    f = run_window(tracker, clock, [0.0, 0.5, 1.0, 1.5, 2.0])
    assert f.values["gpu_power_source"] == "average"
    assert "1-second" in f.reasons["gpu_power_source"]
    assert f.values["gpu_energy_power_kwh"] == pytest.approx(200.0 / KWH)


def _minute_util(t):
    """40% in the first minute, 70% in the second, 100% in the third (NVML's value describes the time before t)."""
    return 40.0 if t <= 60 else 70.0 if t <= 120 else 100.0


def test_read_estimate_equals_u_p0_over_6000_for_minute_samples():
    clock = Clock()
    tracker = make_tracker([Board(UUID_A, util=_minute_util, limit_w=250.0)], clock, read_sample_period_s=60)
    f = run_window(tracker, clock, [float(t) for t in range(0, 181, 10)])
    p0_kw = 0.25
    expected = sum(u * p0_kw / 6000 for u in (40, 70, 100))  # one U·p0/6000 kWh per minute-sample
    assert f.values["gpu_energy_read_kwh"] == pytest.approx(expected, rel=1e-12)
    assert f.provenance["gpu_energy_read_kwh"] == "estimated"
    assert f.values["read_p0_kw"] == p0_kw


def test_read_estimate_uses_minute_samples_only_when_asked():
    """With a 60 s period only the samples at 60, 120, 180 s count; the dense sum sees every 10 s."""
    util = {t: (10.0 if t % 60 else 90.0) for t in range(0, 181, 10)}  # 90% exactly at the minute marks
    clock = Clock()
    minute = make_tracker([Board(UUID_A, util=lambda t: util[int(t)])], clock, read_sample_period_s=60, p0_kw=0.3)
    f_minute = run_window(minute, clock, [float(t) for t in range(0, 181, 10)])
    dense = make_tracker([Board(UUID_A, util=lambda t: util[int(t)])], clock, p0_kw=0.3)
    f_dense = run_window(dense, clock, [float(t) for t in range(0, 181, 10)])
    assert f_minute.values["gpu_energy_read_kwh"] == pytest.approx(3 * 90 * 0.3 / 6000)
    # dense: 18 samples of 10 s each: 3 at 90 %, 15 at 10 %
    assert f_dense.values["gpu_energy_read_kwh"] == pytest.approx((3 * 90 + 15 * 10) / 100 * 0.3 * 10 / 3600)
    assert f_dense.reasons["read_p0_kw"] == "measure.p0_kw"


def test_read_minute_protocol_counts_a_trailing_partial_minute_by_its_length():
    clock = Clock()
    tracker = make_tracker([Board(UUID_A, util=_minute_util)], clock, read_sample_period_s=60, p0_kw=0.25)
    f = run_window(tracker, clock, [float(t) for t in range(0, 91, 10)])  # 90 s: one full minute and 30 s
    assert f.values["gpu_energy_read_kwh"] == pytest.approx(40 * 0.25 / 6000 + 70 / 100 * 0.25 * 30 / 3600)


def test_read_error_is_reported_against_the_counter():
    clock = Clock()
    board = Board(UUID_A, util=lambda t: 50.0, limit_w=300.0, energy_j=lambda t: 120.0 * t)
    f = run_window(make_tracker([board], clock), clock, [0.0, 1.0, 2.0, 3.0, 4.0])
    read = 0.5 * 0.3 * 4 / 3600  # kWh
    counter = 120.0 * 4 / KWH
    assert f.values["read_estimate_error_pct"] == pytest.approx(100 * (read - counter) / counter)


# -------------------------------------------------------------- failures
def test_nvml_error_mid_trace_is_counted_and_the_window_still_reports():
    clock = Clock()
    power = {0.0: 100.0, 1.0: 999.0, 2.0: 200.0, 3.0: 200.0}
    board = Board(UUID_A, power_w=lambda t: power[t], fail={("power", 1.0), ("util", 2.0)})
    f = run_window(make_tracker([board], clock), clock, [0.0, 1.0, 2.0, 3.0])
    assert f.values["nvml_errors"] == 2
    assert "GPU is lost" in f.reasons["nvml_errors"]
    # the failed sample at t=1 is skipped: (100+200)/2·2 + 200·1 = 500 J
    assert f.values["gpu_energy_power_kwh"] == pytest.approx(500.0 / KWH)
    assert f.values["gpu_sample_count"] == 3
    assert f.values["gpu_energy_kwh"] is not None


def test_a_non_nvml_exception_in_a_call_never_escapes_the_sampler():
    clock = Clock()
    tracker = make_tracker([Board(UUID_A)], clock)

    def broken(h):
        raise RuntimeError("driver went away")

    tracker.begin("train")
    tracker._nvml.nvmlDeviceGetMemoryInfo = broken
    tracker.sampler.sample_once()
    clock.t = 1.0
    f = tracker.end("train")
    assert f.values["nvml_errors"] == 2
    assert "driver went away" in f.reasons["nvml_errors"]


def test_device_without_counter_gives_null_with_reason_and_keeps_the_integral():
    clock = Clock()
    f = run_window(make_tracker([Board(UUID_A, counter=False)], clock), clock, [0.0, 0.5, 1.0, 1.5, 2.0])
    assert f.values["gpu_energy_kwh"] is None
    assert f.provenance["gpu_energy_kwh"] == "unavailable"
    assert "energy counter not available" in f.reasons["gpu_energy_kwh"]
    assert "Not Supported" in f.reasons["gpu_energy_kwh"]
    assert f.values["gpu_energy_power_kwh"] == pytest.approx(200.0 / KWH)
    assert f.values["read_estimate_error_pct"] is None
    assert f.values["nvml_errors"] == 0  # unsupported at start is a reason, not an error


def test_window_shorter_than_counter_update_is_low_confidence_not_a_confident_zero():
    clock = Clock()
    tracker = make_tracker([Board(UUID_A, energy_j=lambda t: 1000.0)], clock)  # the counter has not ticked yet
    f = run_window(tracker, clock, [0.0, 0.03])
    assert f.values["gpu_energy_low_confidence"] is True
    assert "shorter than the energy counter's update period" in f.reasons["gpu_energy_low_confidence"]
    assert "only 2 power samples" in f.reasons["gpu_energy_low_confidence"]


def test_enough_samples_over_a_long_window_is_confident():
    clock = Clock()
    f = run_window(make_tracker([Board(UUID_A)], clock), clock, [0.0, 0.1, 0.2, 0.3, 0.4])
    assert f.values["gpu_energy_low_confidence"] is False
    assert "gpu_energy_low_confidence" not in f.reasons


# ------------------------------------------------------ windows and devices
def test_nested_windows_each_get_their_own_counter_delta():
    clock = Clock()
    tracker = make_tracker([Board(UUID_A, energy_j=lambda t: 40.0 * t)], clock)
    meter = Meter([tracker])
    clock.t = 0.0
    meter.begin_window("train")
    clock.t = 10.0
    meter.begin_window("eval")
    for t in (11.0, 12.0, 13.0):
        clock.t = t
        tracker.sampler.sample_once()
    clock.t = 14.0
    inner = meter.end_window("eval")
    clock.t = 20.0
    outer = meter.end_window("train")
    assert inner["gpu_energy_kwh"] == pytest.approx(40.0 * 4 / KWH)
    assert outer["gpu_energy_kwh"] == pytest.approx(40.0 * 20 / KWH)
    assert outer["warnings"] == []


def test_headline_sums_devices_and_keeps_per_device_detail():
    clock = Clock()
    boards = [Board(UUID_A, power_w=lambda t: 100.0, energy_j=lambda t: 100.0 * t, util=lambda t: 20.0),
              Board(UUID_B, power_w=lambda t: 300.0, energy_j=lambda t: 300.0 * t, util=lambda t: 60.0)]
    f = run_window(make_tracker(boards, clock), clock, [0.0, 1.0, 2.0, 3.0, 4.0])
    assert f.values["gpu_energy_kwh"] == pytest.approx(400.0 * 4 / KWH)
    assert f.values["gpu_energy_power_kwh"] == pytest.approx(400.0 * 4 / KWH)
    assert f.values["gpu_util_mean_pct"] == pytest.approx(40.0)
    assert f.values["gpu_count"] == 2
    detail = f.values["gpu_devices"]
    assert [d["uuid"] for d in detail] == [UUID_A, UUID_B]
    assert detail[1]["gpu_energy_kwh"] == pytest.approx(300.0 * 4 / KWH)
    assert detail[1]["provenance"]["gpu_energy_kwh"] == "measured"


def test_headline_is_null_when_one_device_lacks_the_counter():
    clock = Clock()
    boards = [Board(UUID_A), Board(UUID_B, counter=False)]
    f = run_window(make_tracker(boards, clock), clock, [0.0, 1.0, 2.0, 3.0, 4.0])
    assert f.values["gpu_energy_kwh"] is None
    assert f.reasons["gpu_energy_kwh"].startswith("cuda:1: energy counter not available")
    assert f.values["gpu_energy_power_kwh"] is not None


def test_other_processes_on_the_gpu_raise_a_warning():
    clock = Clock()
    board = Board(UUID_A, pids=(os.getpid(), 4242))
    f = run_window(make_tracker([board], clock), clock, [0.0, 0.5, 1.0, 1.5, 2.0])
    assert any("shared with other processes" in w and "4242" in w for w in f.values["warnings"])


def test_background_thread_samples_at_the_configured_interval():
    boards = [Board(UUID_A)]
    nvml = FakeNvml(boards, time.perf_counter)
    tracker = GpuEnergyTracker(MeasureSettings(nvml_interval_s=0.05), devices=[0], nvml=nvml, env={},
                               cuda_uuid=lambda i: UUID_A)
    tracker.start()
    try:
        tracker.begin("train")
        t0 = time.perf_counter()
        time.sleep(0.5)
        f = tracker.end("train")
        elapsed = time.perf_counter() - t0
    finally:
        tracker.stop()
    # A loaded machine may starve the thread (fewer samples, longer sleep) but it never samples faster than
    # asked: bounds from the time that actually passed, not from the nominal 0.5 s.
    n = f.values["gpu_sample_count"]
    assert 3 <= n <= elapsed / 0.05 + 3  # at least one thread sample between the two boundary samples
    assert f.values["gpu_sample_interval_mean_s"] >= 0.03
    assert f.values["gpu_sample_interval_mean_s"] <= elapsed / 2
    assert f.values["gpu_energy_power_kwh"] == pytest.approx(100.0 * f.values["gpu_sample_interval_mean_s"]
                                                            * (f.values["gpu_sample_count"] - 1) / KWH, rel=1e-6)


def test_without_nvml_library_every_gpu_field_is_null_with_pynvmls_reason():
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - a machine with a driver
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    tracker = GpuEnergyTracker(MeasureSettings())  # the real pynvml
    meter = Meter([tracker])
    with meter:
        with meter.window("train"):
            pass
    res = meter.results["train"]
    for name in GPU_FIELDS:
        assert res[name] is None
        assert res["provenance"][name] == "unavailable"
        assert res["reasons"][name] == "NVML Shared Library Not Found"


# --------------------------------------------------------- device mapping
BOARDS = [Board(UUID_A), Board(UUID_B), Board(UUID_C)]  # NVML order = PCI bus order


def _nvml_indices(devices):
    return [d.nvml_index for d in devices]


def test_cuda_visible_devices_as_indices_maps_through_torch_uuids():
    # CUDA_VISIBLE_DEVICES=0,1 but CUDA orders fastest-first: its device 0 is the board NVML calls 1
    torch_uuids = {0: UUID_B[4:], 1: UUID_A[4:]}
    devs = resolve_gpus([0, 1], FakeNvml(BOARDS, Clock()), env={"CUDA_VISIBLE_DEVICES": "0,1"},
                        cuda_uuid=torch_uuids.get)
    assert _nvml_indices(devs) == [1, 0]
    assert all(d.mapped_by == "uuid (torch)" and d.caveat is None for d in devs)


def test_cuda_visible_devices_as_uuids_maps_without_torch():
    env = {"CUDA_VISIBLE_DEVICES": f"{UUID_C},GPU-aaaaaaaa"}  # a full UUID and a unique prefix
    devs = resolve_gpus([0, 1], FakeNvml(BOARDS, Clock()), env=env, cuda_uuid=lambda i: None)
    assert _nvml_indices(devs) == [2, 0]
    assert [d.uuid for d in devs] == [UUID_C, UUID_A]
    assert all(d.mapped_by == "uuid (CUDA_VISIBLE_DEVICES)" and d.caveat is None for d in devs)


def test_indices_without_torch_fall_back_to_nvml_index_with_a_caveat():
    devs = resolve_gpus([0, 1], FakeNvml(BOARDS, Clock()), env={"CUDA_VISIBLE_DEVICES": "2,0"},
                        cuda_uuid=lambda i: None)
    assert _nvml_indices(devs) == [2, 0]
    assert all(d.mapped_by == "index" and "without a UUID check" in d.caveat for d in devs)
    pci = resolve_gpus([0], FakeNvml(BOARDS, Clock()), env={"CUDA_VISIBLE_DEVICES": "2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
                       cuda_uuid=lambda i: None)
    assert pci[0].nvml_index == 2 and pci[0].caveat is None


def test_mig_ids_map_to_the_parent_gpu_with_a_caveat():
    mig = Board("MIG-dddddddd-0000-0000-0000-000000000000", mig=BOARDS[1])
    nvml = FakeNvml(BOARDS, Clock(), migs={"d": mig})
    new_style = resolve_gpus([0], nvml, env={"CUDA_VISIBLE_DEVICES": mig.uuid}, cuda_uuid=lambda i: None)
    old_style = resolve_gpus([0], nvml, env={"CUDA_VISIBLE_DEVICES": f"MIG-{UUID_C}/1/0"}, cuda_uuid=lambda i: None)
    assert new_style[0].uuid == UUID_B and "MIG instance" in new_style[0].caveat
    assert old_style[0].uuid == UUID_C and "MIG instance" in old_style[0].caveat


def test_a_device_hidden_by_cuda_visible_devices_is_an_error_not_a_guess():
    devs = resolve_gpus([1], FakeNvml(BOARDS, Clock()), env={"CUDA_VISIBLE_DEVICES": "0"}, cuda_uuid=lambda i: None)
    assert devs[0].handle is None and "not among CUDA_VISIBLE_DEVICES" in devs[0].error


def test_visible_devices_parsing_follows_cuda_rules():
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("") == []
    assert parse_visible_devices("0,-1,2") == ["0"]
    assert parse_visible_devices(" 1, GPU-abc ,MIG-x") == ["1", "GPU-abc", "MIG-x"]


def test_run_devices_become_cuda_ordinals_and_cpu_is_dropped():
    import torch

    assert cuda_ordinals(["cpu", "cuda:1", torch.device("cuda", 0), 1, 3]) == [1, 0, 3]
    assert cuda_ordinals([torch.device("cpu")]) == []


def test_a_gpu_of_the_run_missing_from_nvml_nulls_every_gpu_field():
    clock = Clock()
    nvml = FakeNvml(BOARDS, clock)
    tracker = GpuEnergyTracker(MeasureSettings(), devices=[0, 5], nvml=nvml, clock=clock, background=False,
                               env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, cuda_uuid=lambda i: None)
    tracker.start()
    tracker.begin("train")
    f = tracker.end("train")
    assert f.values["gpu_energy_kwh"] is None
    assert "cuda:5" in f.reasons["gpu_energy_kwh"] and "matches no NVML device of 3" in f.reasons["gpu_energy_kwh"]
