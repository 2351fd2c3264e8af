"""The trackers a run is measured with, built from the suite's ``measure:`` block.

``build_trackers(settings, devices=[device])`` gives the list the runner
hands to :class:`~energybench.measure.meter.Meter` (which adds its own wall
clock). Two trackers:

- :class:`~energybench.measure.memory.MemoryTracker`: CUDA peaks, peak RSS;
- :class:`EnergyTracker`: GPU (NVML) and host (CodeCarbon) energy, and their
  sum with its emissions, which need both sides and so live here.

Totals (both *estimated* at best when any part is, see ``_weakest``):

- ``energy_kwh``: GPU + CPU + RAM energy of the window. The GPU part is the
  counter (``gpu_energy_kwh``), else the power integral; a run without a GPU
  counts none. Null when a part the run has is unknown: a total missing a
  part would understate.
- ``emissions_kg``: ``energy_kwh`` × CodeCarbon's offline carbon intensity
  for ``measure.country_iso_code`` (a yearly grid average: *estimated*).
"""

from __future__ import annotations

from typing import Any, Iterable

from energybench.measure.figures import ESTIMATED, INTEGRATED, MEASURED, UNAVAILABLE, Figures
from energybench.measure.host import HostEnergyTracker
from energybench.measure.memory import MemoryTracker
from energybench.measure.meter import Tracker
from energybench.measure.nvml import GpuEnergyTracker
from energybench.measure.settings import MeasureSettings

TOTAL_FIELDS = ("energy_kwh", "emissions_kg")
_ORDER = (MEASURED, INTEGRATED, ESTIMATED, UNAVAILABLE)


def _weakest(*provenances: str) -> str:
    return max(provenances, key=_ORDER.index)


class EnergyTracker:
    """GPU and host energy trackers run together, plus their total and its emissions."""

    def __init__(self, gpu: GpuEnergyTracker, host: HostEnergyTracker):
        self.gpu, self.host = gpu, host

    def start(self) -> None:
        self.gpu.start()
        self.host.start()

    def begin(self, window: str) -> None:
        self.gpu.begin(window)
        self.host.begin(window)

    def end(self, window: str) -> Figures:
        host = self.host.end(window)  # reverse order of begin, as the Meter does
        gpu = self.gpu.end(window)
        return self._combine(gpu, host)

    def reading(self, window: str) -> Figures:
        """The window's energy so far (both sides and their total), leaving it open."""
        return self._combine(self.gpu.reading(window), self.host.reading(window))

    def _combine(self, gpu: Figures, host: Figures) -> Figures:
        warnings = [*gpu.values.pop("warnings", []), *host.values.pop("warnings", [])]
        f = Figures()
        f.update(gpu)
        f.update(host)
        self._totals(f)
        f.values["warnings"] = warnings
        return f

    def stop(self) -> None:
        self.host.stop()
        self.gpu.stop()

    def _totals(self, f: Figures) -> None:
        parts, provs, missing = [], [], []
        for name in ("cpu_energy_kwh", "ram_energy_kwh"):
            if f.values.get(name) is None:
                missing.append(f"{name}: {f.reasons.get(name)}")
            else:
                parts.append(f.values[name])
                provs.append(f.provenance[name])
        gpu_how = "no GPU in the run"
        if self.gpu.uses_gpu:
            gpu_name = next((n for n in ("gpu_energy_kwh", "gpu_energy_power_kwh") if f.values.get(n) is not None), None)
            if gpu_name is None:
                missing.append(f"gpu_energy_kwh: {f.reasons.get('gpu_energy_kwh')}")
            else:
                parts.append(f.values[gpu_name])
                provs.append(f.provenance[gpu_name])
                gpu_how = f"GPU from {gpu_name}"
        if missing:
            f.null("energy_kwh", "; ".join(missing))
            f.null("emissions_kg", "no total energy: " + "; ".join(missing))
            return
        total = sum(parts)
        f.put("energy_kwh", total, _weakest(*provs), f"CPU + RAM (CodeCarbon) + {gpu_how}")
        intensity = f.values.get("carbon_intensity_kg_per_kwh")
        if intensity is None:
            f.null("emissions_kg", f.reasons.get("carbon_intensity_kg_per_kwh", "no carbon intensity"))
        else:
            f.put("emissions_kg", total * intensity, ESTIMATED,
                  "energy_kwh × carbon_intensity_kg_per_kwh (CodeCarbon offline grid average)")


def build_trackers(settings: MeasureSettings, devices: Iterable[Any] | None = None, *, nvml=None) -> list[Tracker]:
    """Trackers for one run.

    ``devices``: the devices the run computes on, e.g. ``[torch.device("cuda:0")]``
    or ``[torch.device("cpu")]``; None means every CUDA device torch sees.
    ``nvml`` replaces the real ``pynvml`` (tests, benchmarks without a GPU).
    Nothing starts here: the Meter calls ``start()`` once (CodeCarbon's first
    start costs ~1.5 s) and ``stop()`` at the end.
    """
    devices = None if devices is None else list(devices)
    gpu = GpuEnergyTracker(settings, devices, nvml=nvml)
    host = HostEnergyTracker(settings)
    return [MemoryTracker(settings, devices), EnergyTracker(gpu, host)]
