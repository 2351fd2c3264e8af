"""Host energy from CodeCarbon (one real start for the module), totals and emissions, build_trackers."""

from __future__ import annotations

import glob
import json
import time
from importlib import resources

import pytest

from energybench.measure.figures import Figures
from energybench.measure.host import HOST_FIELDS, HostEnergyTracker
from energybench.measure.meter import Meter
from energybench.measure.nvml import GpuEnergyTracker
from energybench.measure.settings import MeasureSettings
from energybench.measure.trackers import EnergyTracker, build_trackers

RAPL_READABLE = bool(glob.glob("/sys/class/powercap/intel-rapl*/energy_uj"))


def _usa_intensity_kg_per_kwh() -> float:
    """CodeCarbon's shipped energy-mix table, read directly (g/kWh → kg/kWh)."""
    path = resources.files("codecarbon") / "data" / "private_infra" / "global_energy_mix.json"
    return json.loads(path.read_text())["USA"]["carbon_intensity"] / 1000


@pytest.fixture(scope="module")
def host():
    tracker = HostEnergyTracker(MeasureSettings(country_iso_code="USA"))
    tracker.start()  # the one CodeCarbon start of this module (~1.5 s)
    yield tracker
    tracker.stop()


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(i * i for i in range(1000))


@pytest.mark.skipif(RAPL_READABLE, reason="this machine has RAPL: CPU energy is measured, not estimated")
def test_host_energy_is_estimated_here_with_codecarbons_model_named(host):
    host.begin("train")
    _burn(0.2)
    f = host.end("train")
    assert f.values["cpu_energy_kwh"] > 0 and f.values["ram_energy_kwh"] > 0
    assert f.provenance["cpu_energy_kwh"] == "estimated"
    assert f.provenance["ram_energy_kwh"] == "estimated"
    assert "RAPL not readable" in f.reasons["cpu_energy_kwh"]
    assert f.values["host_energy_method"].startswith("cpu: ")


def test_short_windows_are_measured_at_their_boundaries_and_add_up(host):
    host.begin("train")
    host.begin("a")
    _burn(0.15)
    a = host.end("a")
    host.begin("b")
    _burn(0.15)
    b = host.end("b")
    train = host.end("train")
    for name in ("cpu_energy_kwh", "ram_energy_kwh"):
        assert a.values[name] > 0 and b.values[name] > 0  # far shorter than CodeCarbon's 15 s period, yet not zero
        assert train.values[name] >= a.values[name] + b.values[name]
        assert train.values[name] <= 1.5 * (a.values[name] + b.values[name])


def test_carbon_intensity_is_codecarbons_offline_figure_for_the_country(host):
    host.begin("w")
    f = host.end("w")
    assert f.values["carbon_intensity_kg_per_kwh"] == pytest.approx(_usa_intensity_kg_per_kwh(), rel=5e-3)


def test_total_energy_and_emissions_on_a_run_without_gpu(host):
    gpu = GpuEnergyTracker(MeasureSettings(), devices=["cpu"])
    gpu.start()
    combined = EnergyTracker(gpu, host)  # host already started
    combined.begin("train")
    _burn(0.1)
    f = combined.end("train")
    gpu.stop()
    total = f.values["cpu_energy_kwh"] + f.values["ram_energy_kwh"]
    assert f.values["energy_kwh"] == pytest.approx(total)
    assert f.values["emissions_kg"] == pytest.approx(total * _usa_intensity_kg_per_kwh(), rel=5e-3)
    assert f.provenance["emissions_kg"] == "estimated"


def test_codecarbon_failing_to_start_gives_nulls_with_reason():
    def broken(settings):
        raise OSError("no /proc/cpuinfo")

    tracker = HostEnergyTracker(MeasureSettings(), factory=broken)
    meter = Meter([tracker])
    with meter, meter.window("train"):
        pass
    res = meter.results["train"]
    for name in HOST_FIELDS:
        assert res[name] is None
        assert res["reasons"][name] == "CodeCarbon failed to start: OSError: no /proc/cpuinfo"


def test_host_energy_switched_off_in_the_suite_is_null_with_reason():
    tracker = HostEnergyTracker(MeasureSettings(host_energy=False))
    tracker.start()
    tracker.begin("train")
    f = tracker.end("train")
    assert f.values["cpu_energy_kwh"] is None
    assert "measure.host_energy: false" in f.reasons["cpu_energy_kwh"]


class _StubTracker:
    """Fixed figures, to check how the totals combine GPU and host parts."""

    def __init__(self, figures: Figures, uses_gpu: bool = True):
        self.figures, self.uses_gpu = figures, uses_gpu

    def start(self): ...
    def begin(self, window): ...
    def stop(self): ...

    def end(self, window):
        f = Figures()
        f.update(self.figures)
        return f


def _host_figs(cpu=1e-3, ram=2e-4, intensity=0.5):
    f = Figures()
    f.put("cpu_energy_kwh", cpu, "estimated", "TDP model")
    f.put("ram_energy_kwh", ram, "estimated", "RAM model")
    f.put("carbon_intensity_kg_per_kwh", intensity, "estimated")
    return f


def test_total_uses_the_counter_else_the_power_integral_else_is_null():
    counter = Figures()
    counter.put("gpu_energy_kwh", 0.01, "measured")
    counter.put("gpu_energy_power_kwh", 0.02, "integrated")
    f = EnergyTracker(_StubTracker(counter), _StubTracker(_host_figs())).end("w")
    assert f.values["energy_kwh"] == pytest.approx(0.01 + 1e-3 + 2e-4)
    assert f.values["emissions_kg"] == pytest.approx((0.01 + 1e-3 + 2e-4) * 0.5)

    integral = Figures()
    integral.null("gpu_energy_kwh", "no counter")
    integral.put("gpu_energy_power_kwh", 0.02, "integrated")
    f = EnergyTracker(_StubTracker(integral), _StubTracker(_host_figs())).end("w")
    assert f.values["energy_kwh"] == pytest.approx(0.02 + 1e-3 + 2e-4)
    assert "gpu_energy_power_kwh" in f.reasons["energy_kwh"]

    nothing = Figures()
    nothing.null("gpu_energy_kwh", "NVML Shared Library Not Found")
    nothing.null("gpu_energy_power_kwh", "NVML Shared Library Not Found")
    f = EnergyTracker(_StubTracker(nothing), _StubTracker(_host_figs())).end("w")
    assert f.values["energy_kwh"] is None and "NVML Shared Library Not Found" in f.reasons["energy_kwh"]
    assert f.values["emissions_kg"] is None


def test_build_trackers_measures_a_cpu_run_end_to_end():
    settings = MeasureSettings(host_energy=False)  # CodeCarbon is covered above; keep this fast
    with Meter(build_trackers(settings, devices=["cpu"])) as meter:
        with meter.window("train"):
            pass
    res = meter.results["train"]
    for name in ("gpu_energy_kwh", "cpu_energy_kwh", "energy_kwh", "peak_rss_bytes", "peak_gpu_mem_bytes", "wall_s"):
        assert name in res
    assert res["peak_rss_bytes"] > 0
    assert res["energy_kwh"] is None and "measure.host_energy: false" in res["reasons"]["energy_kwh"]
    assert isinstance(res["warnings"], list)
