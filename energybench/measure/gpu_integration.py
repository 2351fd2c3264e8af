"""One window's GPU figures from its running sums: the energy counter's Δ, the trapezoidal power integral,
peaks, confidence flags, and the sum over the run's devices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from energybench.measure.figures import (
    ESTIMATED,
    INTEGRATED,
    MEASURED,
    UNAVAILABLE,
    Figures,
)
from energybench.measure.nvml_probe import (
    COVERAGE_MIN,
    MJ_PER_KWH,
    POWER_SOURCE_REASON,
    ProbedDevice,
)
from energybench.measure.read_estimate import (
    ReadBusyTime,
    put_read_error,
    put_read_figures,
)
from energybench.measure.settings import MeasureSettings


@dataclass
class DeviceWindow:
    """Running sums of one device over one window (constant memory): the energy counter's first and last
    readings, the trapezoidal integral of power, utilization (its mean, and READ's busy time in ``read``),
    and the largest memory reading."""

    t0: float
    read_period_s: float | None = None
    n: int = 0
    p_n: int = 0
    p_first_t: float | None = None
    p_last_t: float | None = None
    p_last: float | None = None
    p_max_mw: float | None = None
    p_integral_mj: float = 0.0
    e_n: int = 0
    e_first: tuple[float, float] | None = None
    e_last: tuple[float, float] | None = None
    e_backwards: bool = False
    u_n: int = 0
    u_sum: float = 0.0
    mem_max: int | None = None
    errors: int = 0
    last_error: str | None = None

    def __post_init__(self):
        self.read = ReadBusyTime(self.t0, self.read_period_s)

    def add(self, t: float, util: float | None, power_mw: float | None, energy_mj: float | None,
            mem_bytes: int | None) -> None:
        self.n += 1
        if power_mw is not None:
            if self.p_last_t is not None:
                self.p_integral_mj += 0.5 * (self.p_last + power_mw) * (t - self.p_last_t)
            else:
                self.p_first_t = t
            self.p_last_t, self.p_last = t, power_mw
            self.p_n += 1
            self.p_max_mw = power_mw if self.p_max_mw is None else max(self.p_max_mw, power_mw)
        if energy_mj is not None:
            self.e_n += 1
            if self.e_first is None:
                self.e_first = (t, energy_mj)
            elif energy_mj < self.e_last[1]:
                self.e_backwards = True
            self.e_last = (t, energy_mj)
        if util is not None:
            self.u_n += 1
            self.u_sum += util
            self.read.add(t, util)
        if mem_bytes is not None:
            self.mem_max = mem_bytes if self.mem_max is None else max(self.mem_max, mem_bytes)

    def error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message


def device_figures(p: ProbedDevice, w: DeviceWindow, t1: float, settings: MeasureSettings) -> Figures:
    """One device's figures for the window [w.t0, t1]."""
    f = Figures()
    length = t1 - w.t0
    low: list[str] = []
    if length < settings.nvml_counter_update_s:
        low.append(f"window of {length:.3f} s is shorter than the energy counter's update period "
                   f"(~{settings.nvml_counter_update_s} s, measure.nvml_counter_update_s)")
    if p.power_source is not None and w.p_n < settings.nvml_min_samples:
        low.append(f"only {w.p_n} power samples (measure.nvml_min_samples: {settings.nvml_min_samples})")

    # counter
    if p.counter_error:
        f.null("gpu_energy_kwh", p.counter_error)
    elif w.e_n < 2:
        f.null("gpu_energy_kwh", f"fewer than two energy-counter readings on {p.label} ({w.last_error or 'no reading'})")
    elif w.e_backwards:
        f.null("gpu_energy_kwh", f"energy counter of {p.label} went backwards in the window (driver reloaded?)")
    else:
        f.put("gpu_energy_kwh", (w.e_last[1] - w.e_first[1]) / MJ_PER_KWH, MEASURED,
              "Δ nvmlDeviceGetTotalEnergyConsumption")
        span = w.e_last[0] - w.e_first[0]
        if length > 0 and span < COVERAGE_MIN * length:
            low.append(f"energy-counter readings span {100 * span / length:.0f}% of the window (failed reads at its ends)")

    # power
    if p.power_error:
        for name in ("gpu_energy_power_kwh", "gpu_power_mean_w", "gpu_power_max_w", "gpu_sample_count",
                     "gpu_sample_interval_mean_s", "gpu_power_source"):
            f.null(name, p.power_error)
    else:
        f.put("gpu_power_source", p.power_source, MEASURED, POWER_SOURCE_REASON[p.power_source])
        f.put("gpu_sample_count", w.p_n, MEASURED)
        if w.p_n >= 2:
            span = w.p_last_t - w.p_first_t
            f.put("gpu_energy_power_kwh", w.p_integral_mj / MJ_PER_KWH, INTEGRATED,
                  f"trapezoid over {w.p_n} power samples")
            f.put("gpu_power_mean_w", w.p_integral_mj / span / 1000 if span > 0 else w.p_last / 1000, INTEGRATED,
                  "time-weighted mean: integral / time spanned by the samples")
            f.put("gpu_sample_interval_mean_s", span / (w.p_n - 1), MEASURED)
            if length > 0 and span < COVERAGE_MIN * length:
                low.append(f"power samples span {100 * span / length:.0f}% of the window")
        else:
            why = f"{w.p_n} power sample(s) on {p.label}; need two to integrate ({w.last_error or 'window too short'})"
            for name in ("gpu_energy_power_kwh", "gpu_power_mean_w", "gpu_sample_interval_mean_s"):
                f.null(name, why)
        if w.p_max_mw is not None:
            f.put("gpu_power_max_w", w.p_max_mw / 1000, MEASURED, "largest power sample")
        else:
            f.null("gpu_power_max_w", f"no power sample on {p.label} ({w.last_error})")

    put_read_figures(f, p, w.read, w.u_n, w.u_sum, w.last_error)

    if p.mem_error:
        f.null("peak_gpu_mem_nvml_bytes", p.mem_error)
    elif w.mem_max is None:
        f.null("peak_gpu_mem_nvml_bytes", f"no memory sample on {p.label} ({w.last_error})")
    else:
        f.put("peak_gpu_mem_nvml_bytes", w.mem_max, MEASURED,
              "largest nvmlDeviceGetMemoryInfo.used sample: every process on the board, driver context included")
    f.put("nvml_errors", w.errors, MEASURED,
          f"failed NVML sampling calls; last: {w.last_error}" if w.errors else None)
    f.put("gpu_energy_low_confidence", bool(low), MEASURED, "; ".join(low) if low else None)
    return f


# ----------------------------------------------------- across devices
_SUM = ("gpu_energy_kwh", "gpu_energy_power_kwh", "gpu_energy_read_kwh", "gpu_power_mean_w", "gpu_power_max_w",
        "peak_gpu_mem_nvml_bytes", "nvml_errors")
_MEAN = ("gpu_util_mean_pct", "gpu_sample_interval_mean_s")
_MIN = ("gpu_sample_count",)
_SAME = ("read_p0_kw", "gpu_power_source")


def combine_devices(per_device: list[tuple[ProbedDevice, Figures]]) -> Figures:
    """Headline figures: sums over devices (means for utilization and interval, the fewest samples),
    null with every device's reason when any device lacks the value — a partial sum would understate.

    ``gpu_power_max_w`` is the sum of each device's largest sample, an upper bound of the peak total draw.
    """
    out = Figures()
    for name in _SUM + _MEAN + _MIN + _SAME:
        vals = [(p, f.values.get(name), f.provenance.get(name), f.reasons.get(name)) for p, f in per_device]
        missing = [f"{p.label}: {r}" for p, v, _, r in vals if v is None]
        if missing:
            out.null(name, "; ".join(missing))
            continue
        nums = [v for _, v, _, _ in vals]
        prov = _weakest([pr for _, _, pr, _ in vals])
        reason = vals[0][3] if len({r for *_, r in vals}) == 1 else None
        if name in _SUM:
            out.put(name, sum(nums), prov, reason)
        elif name in _MEAN:
            out.put(name, sum(nums) / len(nums), prov, reason)
        elif name in _MIN:
            out.put(name, min(nums), prov, reason)
        elif len(set(nums)) == 1:
            out.put(name, nums[0], prov, reason)
        else:
            out.null(name, "differs between devices: " + ", ".join(f"{p.label}={v}" for p, v, _, _ in vals))
    put_read_error(out)
    low = [f"{p.label}: {f.reasons['gpu_energy_low_confidence']}" for p, f in per_device
           if f.values.get("gpu_energy_low_confidence")]
    out.put("gpu_energy_low_confidence", bool(low), MEASURED, "; ".join(low) if low else None)
    out.put("gpu_count", len(per_device), MEASURED, "GPUs the run uses")
    return out


_ORDER = (MEASURED, INTEGRATED, ESTIMATED, UNAVAILABLE)


def _weakest(provenances: Iterable[str]) -> str:
    return max(provenances, key=_ORDER.index)


def device_detail(p: ProbedDevice, f: Figures) -> dict[str, Any]:
    d = p.device
    return {"cuda_index": d.cuda_index, "nvml_index": d.nvml_index, "uuid": d.uuid, "name": p.name,
            "mapped_by": d.mapped_by, "caveat": d.caveat, "p0_source": p.p0_source, **f.as_dict()}
