"""Host (CPU and RAM) energy per window from CodeCarbon's offline tracker.

CodeCarbon's tracker is started once per run in ``start()`` (its first start
probes the hardware, ~1.5 s) and stopped in ``stop()``. It keeps cumulative
CPU and RAM energy, updated by its own periodic measurement. A window's
figures are differences of those totals, and at each window boundary we make
CodeCarbon measure *now*, so a window's energy covers exactly its own time
even when it is much shorter than CodeCarbon's period.

Why not ``start_task``/``stop_task``: they pause the periodic measurement,
allow one task at a time (our windows nest), and reset the hardware's start
readings. The totals we read (``_total_cpu_energy``, ``_total_ram_energy``,
``_measure_power_and_energy``) are CodeCarbon internals, checked against
codecarbon 3.3.2 (the pinned version); every access is in
:class:`CodeCarbonTotals`, and a mismatch turns into null figures with the
reason, never a crash. A lock shared with CodeCarbon's scheduler keeps its
periodic measurement and ours from accounting the same interval twice.

How CodeCarbon got the numbers (``host_energy_method``) decides provenance:
RAPL (or another energy counter) is *measured*; its TDP × load model, constant
mode and RAM model are *estimated*, with the reason.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from energybench.measure.figures import ESTIMATED, MEASURED, Figures
from energybench.measure.settings import MeasureSettings

HOST_FIELDS = ("cpu_energy_kwh", "ram_energy_kwh", "host_energy_method", "host_energy_scope",
               "carbon_intensity_kg_per_kwh")
# host_energy_scope: "process" when CodeCarbon attributed CPU load and memory to this run's process tree
# (tracking_mode="process" with its load model), "machine" when the figure is the whole machine's (machine mode,
# or an energy counter such as RAPL, which covers every process on the package): runs side by side then share it.

_COUNTER_MODES = {
    "intel_rapl": "RAPL package energy counter (whole CPU package, every process on it)",
    "windows_emi": "Windows Energy Meter Interface (RAPL) counter",
    "intel_power_gadget": "Intel Power Gadget",
    "apple_powermetrics": "Apple powermetrics",
}


def _quiet_codecarbon() -> None:
    logging.getLogger("codecarbon").setLevel(logging.ERROR)


def make_offline_tracker(settings: MeasureSettings):
    """CodeCarbon's offline tracker: no network, no files, quiet."""
    from codecarbon import OfflineEmissionsTracker

    _quiet_codecarbon()  # after the import, which sets its logger to INFO

    return OfflineEmissionsTracker(
        country_iso_code=settings.country_iso_code,
        output_methods=[],
        log_level="error",
        measure_power_secs=settings.host_measure_power_s,
        tracking_mode=settings.host_tracking_mode,
        allow_multiple_runs=True,
        project_name="energybench",
    )


class CodeCarbonTotals:
    """Every use of CodeCarbon internals, in one place (see the module docstring)."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.lock = threading.Lock()

    def start(self) -> None:
        self.tracker.start()  # CodeCarbon swallows its own exceptions here; check it really started
        if getattr(self.tracker, "_start_time", None) is None or not getattr(self.tracker, "_hardware", None):
            raise RuntimeError("CodeCarbon's tracker did not start (its start() failed silently)")
        scheduler = getattr(self.tracker, "_scheduler", None)
        if scheduler is not None and callable(getattr(scheduler, "function", None)):
            periodic = scheduler.function

            def locked(*args, **kwargs):
                with self.lock:
                    return periodic(*args, **kwargs)

            scheduler.function = locked

    def now(self) -> tuple[float, float]:
        """Measure now; cumulative (CPU kWh, RAM kWh) since start."""
        with self.lock:
            self.tracker._measure_power_and_energy()
            return float(self.tracker._total_cpu_energy.kWh), float(self.tracker._total_ram_energy.kWh)

    def carbon_intensity_kg_per_kwh(self) -> float:
        from codecarbon.core.units import Energy

        self.tracker._ensure_geo_metadata()
        self.tracker._ensure_emissions_engine()
        return float(self.tracker._emissions.get_private_infra_emissions(Energy.from_energy(kWh=1.0), self.tracker._geo))

    def scope(self) -> str:
        """"process" if both CPU and RAM figures are this process tree's share, else "machine"."""
        if getattr(self.tracker, "_tracking_mode", "machine") != "process":
            return "machine"
        cpu = next((h for h in self.tracker._hardware if type(h).__name__ == "CPU"), None)
        mode = getattr(cpu, "_mode", None)
        return "process" if mode == "cpu_load" else "machine"  # "constant" is 50% of TDP, whoever used it

    def method(self) -> tuple[str, str, str, str]:
        """(description, CPU provenance, CPU reason, RAM reason) of how CodeCarbon measures here."""
        cpu = next((h for h in self.tracker._hardware if type(h).__name__ in ("CPU", "AppleSiliconChip", "Raspberry")
                    and getattr(h, "chip_part", "CPU") == "CPU"), None)
        ram = next((h for h in self.tracker._hardware if type(h).__name__ == "RAM"), None)
        mode = getattr(cpu, "_mode", None) or (type(cpu).__name__ if cpu else "none")
        tdp = getattr(cpu, "_tdp", None)
        if cpu is None:
            cpu_prov, cpu_reason = ESTIMATED, "CodeCarbon found no CPU to track"
        elif mode in _COUNTER_MODES or type(cpu).__name__ == "AppleSiliconChip":
            cpu_prov, cpu_reason = MEASURED, _COUNTER_MODES.get(mode, mode)
        elif mode == "cpu_load":
            cpu_prov = ESTIMATED
            cpu_reason = (f"CodeCarbon TDP model: RAPL not readable, so CPU power = TDP ({tdp} W) × a load curve "
                          f"of psutil CPU utilization ({self.tracker._tracking_mode} mode)")
        elif mode == "constant":
            cpu_prov, cpu_reason = ESTIMATED, f"CodeCarbon constant-CPU model: RAPL not readable, 50% of TDP ({tdp} W)"
        else:
            cpu_prov, cpu_reason = ESTIMATED, f"CodeCarbon CPU mode {mode!r}"
        force_ram = getattr(ram, "_force_ram_power", None)
        ram_reason = (f"CodeCarbon RAM: user constant {force_ram} W" if force_ram is not None else
                      "CodeCarbon RAM model: power estimated from installed memory size (DIMM count × W per DIMM)")
        generic = " [generic TDP]" if getattr(cpu, "_is_generic_tdp", False) else ""
        desc = f"cpu: {mode}{f' (TDP {tdp} W{generic})' if tdp and mode not in _COUNTER_MODES else ''}; ram: "
        desc += "user constant" if force_ram is not None else "RAM model"
        return desc, cpu_prov, cpu_reason, ram_reason

    def stop(self) -> None:
        self.tracker.stop()


class HostEnergyTracker:
    """The Meter's host tracker: CPU and RAM energy of each window, and the grid's carbon intensity.

    Fields: ``cpu_energy_kwh``, ``ram_energy_kwh``, ``host_energy_method``,
    ``carbon_intensity_kg_per_kwh`` (CodeCarbon's offline yearly average for
    ``measure.country_iso_code``). If CodeCarbon cannot start, all are null with
    the reason and the run goes on.
    """

    def __init__(self, settings: MeasureSettings, factory: Callable[[MeasureSettings], Any] = make_offline_tracker):
        self.settings = settings
        self._factory = factory
        self.cc: CodeCarbonTotals | None = None
        self.unavailable: str | None = None
        self._marks: dict[str, tuple[float, float]] = {}
        self._method: tuple[str, str, str, str] | None = None
        self._intensity: float | None = None
        self._intensity_error: str | None = None
        self.warnings: list[str] = []

    def start(self) -> None:
        if not self.settings.host_energy:
            self.unavailable = "host energy disabled in the suite (measure.host_energy: false)"
            return
        cc = None
        try:
            cc = CodeCarbonTotals(self._factory(self.settings))
            cc.start()
            self._method = cc.method()
            cc.now()
            self.cc = cc
        except Exception as exc:  # noqa: BLE001 - host energy is optional; the run goes on
            self.unavailable = f"CodeCarbon failed to start: {type(exc).__name__}: {exc}"
            if cc is not None:
                try:
                    cc.stop()  # do not leave its timer threads behind
                except Exception:  # noqa: BLE001
                    pass
            return
        try:
            self._intensity = self.cc.carbon_intensity_kg_per_kwh()
            if not self._country_known():
                self.warnings.append(f"CodeCarbon has no energy mix for {self.settings.country_iso_code!r}; "
                                     "its world average carbon intensity is used")
        except Exception as exc:  # noqa: BLE001
            self._intensity_error = f"no carbon intensity from CodeCarbon: {type(exc).__name__}: {exc}"

    def _country_known(self) -> bool:
        try:
            from codecarbon.input import DataSource

            return self.settings.country_iso_code in DataSource().get_global_energy_mix_data()
        except Exception:  # noqa: BLE001
            return True

    def begin(self, window: str) -> None:
        if self.cc is not None:
            try:
                self._marks[window] = self.cc.now()
            except Exception as exc:  # noqa: BLE001
                self.warnings.append(f"CodeCarbon measurement failed at the start of {window!r}: {exc}")

    def end(self, window: str) -> Figures:
        return self._figures(self._marks.pop(window, None))

    def reading(self, window: str) -> Figures:
        """The window's figures so far (one CodeCarbon measurement now); the window stays open."""
        return self._figures(self._marks.get(window))

    def _figures(self, start: tuple[float, float] | None) -> Figures:
        f = Figures()
        if self.cc is None or start is None:
            why = self.unavailable or "CodeCarbon measurement failed at the window's start"
            for name in HOST_FIELDS:
                f.null(name, why)
        else:
            try:
                cpu1, ram1 = self.cc.now()
                desc, cpu_prov, cpu_reason, ram_reason = self._method
                f.put("cpu_energy_kwh", cpu1 - start[0], cpu_prov, cpu_reason)
                f.put("ram_energy_kwh", ram1 - start[1], ESTIMATED, ram_reason)
                f.put("host_energy_method", desc, cpu_prov, cpu_reason)
                scope = self.cc.scope()
                f.put("host_energy_scope", scope, cpu_prov,
                      "this run's process tree's CPU time and memory (CodeCarbon tracking_mode=process)"
                      if scope == "process" else "the whole machine's CPU and RAM (CodeCarbon machine mode or an "
                      "energy counter covering every process); shared by runs side by side")
            except Exception as exc:  # noqa: BLE001
                for name in ("cpu_energy_kwh", "ram_energy_kwh", "host_energy_method", "host_energy_scope"):
                    f.null(name, f"CodeCarbon measurement failed: {type(exc).__name__}: {exc}")
            if self._intensity is not None:
                f.put("carbon_intensity_kg_per_kwh", self._intensity, ESTIMATED,
                      f"CodeCarbon offline yearly energy-mix average for {self.settings.country_iso_code}")
            else:
                f.null("carbon_intensity_kg_per_kwh", self._intensity_error or "unknown")
        f.values["warnings"] = list(self.warnings)
        return f

    def stop(self) -> None:
        if self.cc is not None:
            try:
                self.cc.stop()
            except Exception:  # noqa: BLE001
                pass
            self.cc = None
