"""GPU energy, power, utilization and memory from NVML, per window and device.

One background thread samples every GPU the run uses at a fixed interval
(``measure.nvml_interval_s``, 100 ms by default); each window boundary takes
one more sample synchronously, so the energy counter is read exactly at the
window's start and end. Samples are folded into running sums per open window
(:class:`DeviceWindow`), so memory stays constant however long a window runs.

Three GPU energies per window, from most to least trustworthy (DESIGN.md):

- ``gpu_energy_kwh``: Δ of ``nvmlDeviceGetTotalEnergyConsumption`` (mJ), the
  board's own counter (Volta and newer). Provenance *measured*.
- ``gpu_energy_power_kwh``: trapezoidal integral of power samples. Power comes
  from the ``NVML_FI_DEV_POWER_INSTANT`` field where the board has it, since
  ``nvmlDeviceGetPowerUsage`` is a 1-second average on Ampere and newer and
  smears short windows; ``gpu_power_source`` says which. *integrated*.
- ``gpu_energy_read_kwh``: READ's Eq. 15-16, Σ uᵢ/100 · p0 · Δtᵢ, with uᵢ
  NVML utilization and p0 the board's default power limit (or
  ``measure.p0_kw``). With ``read_sample_period_s: 60`` utilization is taken
  once a minute as READ did, so each sample adds U·p0/6000 kWh (p0 in kW).
  *estimated*; ``read_estimate_error_pct`` is its error against the counter.

Product code passes the real ``pynvml`` module (from nvidia-ml-py); tests pass
an object with the same functions that replays a scripted trace, and drive
:meth:`NvmlSampler.sample_once` with a controlled clock instead of sleeping.
A failing NVML call is counted in ``nvml_errors`` and never stops the run.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from energybench.measure.devices import GpuDevice, cuda_ordinals, resolve_gpus, torch_cuda_uuid
from energybench.measure.figures import ESTIMATED, INTEGRATED, MEASURED, UNAVAILABLE, Figures
from energybench.measure.settings import MeasureSettings

MJ_PER_KWH = 3.6e9  # 1 kWh = 3.6e6 J = 3.6e9 mJ; also mW·s per kWh

#: Every per-window field this module emits, in table order.
GPU_FIELDS = (
    "gpu_energy_kwh", "gpu_energy_power_kwh", "gpu_energy_read_kwh", "read_estimate_error_pct", "read_p0_kw",
    "gpu_power_mean_w", "gpu_power_max_w", "gpu_util_mean_pct", "gpu_sample_count", "gpu_sample_interval_mean_s",
    "gpu_power_source", "peak_gpu_mem_nvml_bytes", "nvml_errors", "gpu_energy_low_confidence", "gpu_count",
    "gpu_devices",
)
#: Per-device fields (the same names, one device's share), kept under ``gpu_devices``.
DEVICE_FIELDS = GPU_FIELDS[:-2]

INSTANT = "instant"
AVERAGE = "average"
POWER_SOURCE_REASON = {
    INSTANT: "NVML field NVML_FI_DEV_POWER_INSTANT (instantaneous board power)",
    AVERAGE: "nvmlDeviceGetPowerUsage: a 1-second moving average on Ampere and newer, which smears short windows",
}
COVERAGE_MIN = 0.9  # samples must span this share of a window to be trusted


# ----------------------------------------------------------------- devices
@dataclass
class ProbedDevice:
    """A GPU of the run with what its NVML can report, found once at start.

    Each ``*_error`` is None when that reading works, else why it does not;
    a reading that worked at start and fails later is a counted error instead.
    """

    device: GpuDevice
    name: str | None = None
    counter_error: str | None = None
    power_source: str | None = None
    power_error: str | None = None
    util_error: str | None = None
    mem_error: str | None = None
    p0_kw: float | None = None
    p0_source: str | None = None
    p0_error: str | None = None

    @property
    def label(self) -> str:
        return f"cuda:{self.device.cuda_index}"


def _call_error(fn_name: str, exc: BaseException) -> str:
    return f"{fn_name}: {exc}"


def _field_number(v) -> float:
    """The number inside an ``nvmlFieldValue_t`` union, by its value type."""
    kind = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
    return float(getattr(v.value, kind.get(int(v.valueType), "uiVal")))


def read_instant_power_mw(nvml, handle) -> float:
    values = nvml.nvmlDeviceGetFieldValues(handle, [nvml.NVML_FI_DEV_POWER_INSTANT])
    v = values[0]
    if int(v.nvmlReturn) != nvml.NVML_SUCCESS:
        raise nvml.NVMLError(int(v.nvmlReturn))
    return _field_number(v)


def probe(nvml, dev: GpuDevice, p0_kw: float | None = None) -> ProbedDevice:
    """Find which readings ``dev`` supports (each tried once) and READ's p0 for it."""
    p = ProbedDevice(device=dev)
    h = dev.handle
    try:
        name = nvml.nvmlDeviceGetName(h)
        p.name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:  # noqa: BLE001
        p.name = f"unknown ({exc})"
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(h)
    except Exception as exc:  # noqa: BLE001
        p.counter_error = f"energy counter not available on {p.label} ({_call_error('nvmlDeviceGetTotalEnergyConsumption', exc)})"
    try:
        if read_instant_power_mw(nvml, h) > 0:
            p.power_source = INSTANT
    except Exception:  # noqa: BLE001 - older drivers/boards: fall back to the averaged reading
        pass
    if p.power_source is None:
        try:
            nvml.nvmlDeviceGetPowerUsage(h)
            p.power_source = AVERAGE
        except Exception as exc:  # noqa: BLE001
            p.power_error = f"power not available on {p.label} ({_call_error('nvmlDeviceGetPowerUsage', exc)})"
    try:
        nvml.nvmlDeviceGetUtilizationRates(h)
    except Exception as exc:  # noqa: BLE001
        p.util_error = f"utilization not available on {p.label} ({_call_error('nvmlDeviceGetUtilizationRates', exc)})"
    try:
        nvml.nvmlDeviceGetMemoryInfo(h)
    except Exception as exc:  # noqa: BLE001
        p.mem_error = f"memory info not available on {p.label} ({_call_error('nvmlDeviceGetMemoryInfo', exc)})"
    if p0_kw is not None:
        p.p0_kw, p.p0_source = float(p0_kw), "measure.p0_kw"
    else:
        try:
            p.p0_kw = nvml.nvmlDeviceGetPowerManagementDefaultLimit(h) / 1e6  # mW -> kW
            p.p0_source = "NVML default power limit"
        except Exception as exc:  # noqa: BLE001
            p.p0_error = (f"no p0 for READ's estimate: {_call_error('nvmlDeviceGetPowerManagementDefaultLimit', exc)}; "
                          "set measure.p0_kw")
    return p


def read_device(nvml, p: ProbedDevice) -> tuple[tuple, list[str]]:
    """One reading (util %, power mW, energy mJ, memory used bytes) and the calls that failed."""
    h, errors = p.device.handle, []
    util = power = energy = mem = None
    if p.power_source is not None:
        try:
            power = (read_instant_power_mw(nvml, h) if p.power_source == INSTANT
                     else float(nvml.nvmlDeviceGetPowerUsage(h)))
        except Exception as exc:  # noqa: BLE001
            errors.append(_call_error("power", exc))
    if p.counter_error is None:
        try:
            energy = float(nvml.nvmlDeviceGetTotalEnergyConsumption(h))
        except Exception as exc:  # noqa: BLE001
            errors.append(_call_error("nvmlDeviceGetTotalEnergyConsumption", exc))
    if p.util_error is None:
        try:
            util = float(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
        except Exception as exc:  # noqa: BLE001
            errors.append(_call_error("nvmlDeviceGetUtilizationRates", exc))
    if p.mem_error is None:
        try:
            mem = int(nvml.nvmlDeviceGetMemoryInfo(h).used)
        except Exception as exc:  # noqa: BLE001
            errors.append(_call_error("nvmlDeviceGetMemoryInfo", exc))
    return (util, power, energy, mem), errors


# ------------------------------------------------------------ window sums
@dataclass
class DeviceWindow:
    """Running sums of one device over one window (constant memory).

    ``busy_s`` is Σ uᵢ/100 · Δtᵢ, the utilization-weighted time of READ's
    Eq. 15-16; its estimate is p0 · busy_s. Each utilization sample covers the
    time since the previous one (NVML's utilization describes the recent
    past). With ``read_period_s`` set, utilization is instead taken at
    t0 + P, t0 + 2P, … (the first sample at or after each instant) and
    weighs P, as READ's once-a-minute protocol does; the part of the window
    after the last full period weighs its length, so a window shorter than
    P is not a silent zero.
    """

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
    u_last_t: float | None = None
    u_last: float | None = None
    busy_s: float = 0.0
    grid_next: float | None = None
    mem_max: int | None = None
    errors: int = 0
    last_error: str | None = None

    def __post_init__(self):
        if self.read_period_s:
            self.grid_next = self.t0 + self.read_period_s

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
            if self.read_period_s:
                while self.grid_next <= t:
                    self.busy_s += util / 100.0 * self.read_period_s
                    self.grid_next += self.read_period_s
            elif self.u_last_t is not None:
                self.busy_s += util / 100.0 * (t - self.u_last_t)
            self.u_last_t, self.u_last = t, util
        if mem_bytes is not None:
            self.mem_max = mem_bytes if self.mem_max is None else max(self.mem_max, mem_bytes)

    def error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message

    def _remainder_s(self) -> float:
        """Grid mode: time from the last full READ period to the last utilization sample."""
        return max(0.0, self.u_last_t - (self.grid_next - self.read_period_s))

    def read_busy_s(self) -> float:
        """busy_s with the trailing part of the last READ period (grid mode) added."""
        if not self.read_period_s or self.u_last_t is None:
            return self.busy_s
        return self.busy_s + self.u_last / 100.0 * self._remainder_s()

    @property
    def read_samples(self) -> int:
        """Utilization samples the READ estimate used (full periods plus a trailing partial one in grid mode)."""
        if not self.read_period_s:
            return max(self.u_n - 1, 0)
        if self.u_last_t is None:
            return 0
        full = round((self.grid_next - self.t0) / self.read_period_s) - 1
        return full + (1 if self._remainder_s() > 0 else 0)


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

    # READ
    if p.p0_kw is not None:
        f.put("read_p0_kw", p.p0_kw, MEASURED if p.p0_source.startswith("NVML") else ESTIMATED, p.p0_source)
    else:
        f.null("read_p0_kw", p.p0_error)
    if p.util_error:
        f.null("gpu_util_mean_pct", p.util_error)
        f.null("gpu_energy_read_kwh", p.util_error)
    else:
        if w.u_n:
            f.put("gpu_util_mean_pct", w.u_sum / w.u_n, MEASURED, "mean of nvmlDeviceGetUtilizationRates samples")
        else:
            f.null("gpu_util_mean_pct", f"no utilization sample on {p.label} ({w.last_error})")
        if p.p0_kw is None:
            f.null("gpu_energy_read_kwh", p.p0_error)
        elif w.read_samples < 1:
            f.null("gpu_energy_read_kwh", f"no utilization sample after the window's start on {p.label}")
        else:
            protocol = (f"one utilization sample per {w.read_period_s:g} s" if w.read_period_s
                        else f"{w.read_samples} utilization samples")
            f.put("gpu_energy_read_kwh", p.p0_kw * w.read_busy_s() / 3600.0, ESTIMATED,
                  f"READ Eq. 15-16: Σ u/100 · p0 · Δt, p0 = {p.p0_kw:g} kW ({p.p0_source}), {protocol}")
    _put_read_error(f)

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


def _put_read_error(f: Figures) -> None:
    read, counter = f.values.get("gpu_energy_read_kwh"), f.values.get("gpu_energy_kwh")
    if read is None:
        f.null("read_estimate_error_pct", f.reasons.get("gpu_energy_read_kwh", "no READ estimate"))
    elif counter is None:
        f.null("read_estimate_error_pct", "no energy counter to compare with: " + f.reasons.get("gpu_energy_kwh", ""))
    elif counter <= 0:
        f.null("read_estimate_error_pct", "energy counter did not advance in the window")
    else:
        f.put("read_estimate_error_pct", 100.0 * (read - counter) / counter, MEASURED,
              "100 · (gpu_energy_read_kwh − gpu_energy_kwh) / gpu_energy_kwh")


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
    _put_read_error(out)
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


# ---------------------------------------------------------------- sampler
class NvmlSampler:
    """Samples ``devices`` every ``interval_s`` on a daemon thread and feeds every open window.

    Tests call :meth:`sample_once` directly with ``clock`` under their control.
    """

    def __init__(self, nvml, devices: list[ProbedDevice], interval_s: float = 0.1,
                 clock: Callable[[], float] = time.perf_counter):
        self.nvml, self.devices, self.interval_s, self.clock = nvml, devices, interval_s, clock
        self._lock = threading.Lock()
        self._open: dict[str, list[DeviceWindow]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sweeps = 0
        self.errors = 0

    def sample_once(self, t: float | None = None) -> None:
        """One reading of every device, timestamped ``t`` (default: the clock, per device)."""
        with self._lock:
            for k, p in enumerate(self.devices):
                ts = self.clock() if t is None else t
                reading, errors = read_device(self.nvml, p)
                self.errors += len(errors)
                for wins in self._open.values():
                    wins[k].add(ts, *reading)
                    for e in errors:
                        wins[k].error(e)
            self.sweeps += 1

    def open_window(self, name: str, read_period_s: float | None = None) -> float:
        """Start sums for window ``name`` and take its first sample; returns its start time."""
        with self._lock:
            t0 = self.clock()
            self._open[name] = [DeviceWindow(t0=t0, read_period_s=read_period_s) for _ in self.devices]
        self.sample_once()
        return t0

    def close_window(self, name: str) -> tuple[list[DeviceWindow], float]:
        """Take the window's last sample and hand back its sums and end time."""
        self.sample_once()
        with self._lock:
            return self._open.pop(name), self.clock()

    def _run(self) -> None:
        next_t = time.perf_counter()
        while True:
            next_t += self.interval_s
            if self._stop.wait(max(0.0, next_t - time.perf_counter())):
                return
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001 - a sampling thread must never take the run down
                self.errors += 1
            now = time.perf_counter()
            if now > next_t + self.interval_s:  # fell behind (suspended?): do not burst to catch up
                next_t = now

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="energybench-nvml", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5 * self.interval_s + 1)
            self._thread = None


# ---------------------------------------------------------------- tracker
def _import_pynvml():
    import pynvml  # from nvidia-ml-py

    return pynvml


class GpuEnergyTracker:
    """The Meter's GPU tracker: NVML sampling over the run's GPUs (see the module docstring).

    ``devices`` are the run's devices (``torch.device``, ``"cuda:1"``, CUDA
    ordinals; CPU entries ignored; None = every CUDA device torch sees).
    ``nvml`` defaults to the real ``pynvml``; ``background=False`` leaves
    sampling to the caller (tests). Without NVML every GPU field is null with
    NVML's own error as the reason (e.g. "NVML Shared Library Not Found").
    """

    def __init__(self, settings: MeasureSettings, devices: Iterable[Any] | None = None, nvml=None,
                 clock: Callable[[], float] = time.perf_counter, background: bool = True,
                 env: dict[str, str] | None = None, cuda_uuid=torch_cuda_uuid):
        self.settings = settings
        self._devices_arg = None if devices is None else list(devices)
        self._nvml = nvml
        self._clock, self._background, self._env, self._cuda_uuid = clock, background, env, cuda_uuid
        self.unavailable: str | None = None
        self.probed: list[ProbedDevice] = []
        self.sampler: NvmlSampler | None = None
        self.warnings: list[str] = []
        self._initialised = False

    @property
    def uses_gpu(self) -> bool:
        """Whether the run has CUDA devices (then missing GPU figures make any total unknown)."""
        return bool(cuda_ordinals(self._devices_arg))

    def start(self) -> None:
        if not self.settings.gpu_energy:
            self.unavailable = "GPU sampling disabled in the suite (measure.gpu_energy: false)"
            return
        try:
            if self._nvml is None:
                self._nvml = _import_pynvml()
            self._nvml.nvmlInit()
            self._initialised = True
        except Exception as exc:  # noqa: BLE001 - the pynvml error's text is the reason, verbatim
            self.unavailable = str(exc) or type(exc).__name__
            return
        try:
            ordinals = cuda_ordinals(self._devices_arg)
            if not ordinals:
                self.unavailable = NO_GPU_REASON
                return
            devices = resolve_gpus(ordinals, self._nvml, self._env, self._cuda_uuid)
            errors = [d.error for d in devices if d.error]
            if errors:  # one of the run's GPUs cannot be found: a partial sum would understate
                self.unavailable = "; ".join(errors)
                return
            self.warnings += [d.caveat for d in devices if d.caveat]
            self.probed = [probe(self._nvml, d, self.settings.p0_kw) for d in devices]
            self.sampler = NvmlSampler(self._nvml, self.probed, self.settings.nvml_interval_s, self._clock)
            if self._background:
                self.sampler.start()
        except Exception as exc:  # noqa: BLE001
            self.unavailable = f"NVML setup failed: {type(exc).__name__}: {exc}"
            self.probed, self.sampler = [], None

    def begin(self, window: str) -> None:
        if self.sampler is not None:
            self.sampler.open_window(window, self.settings.read_sample_period_s)

    def end(self, window: str) -> Figures:
        if self.sampler is None:
            f = Figures()
            for name in GPU_FIELDS:
                f.null(name, self.unavailable or "GPU tracker was not started")
            f.values["warnings"] = list(self.warnings)
            return f
        sums, t1 = self.sampler.close_window(window)
        per_device = [(p, device_figures(p, w, t1, self.settings)) for p, w in zip(self.probed, sums)]
        f = combine_devices(per_device)
        f.put("gpu_devices", [device_detail(p, df) for p, df in per_device], MEASURED,
              "per-device figures; each entry carries its own provenance and reasons")
        f.values["warnings"] = [*self.warnings, *self._sharing_warnings()]
        return f

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self._initialised:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
            self._initialised = False

    def _sharing_warnings(self) -> list[str]:
        """Warn when processes other than this run use one of its GPUs (their work is in every GPU figure)."""
        ours = {os.getpid()}
        try:
            import psutil

            ours |= {c.pid for c in psutil.Process().children(recursive=True)}
        except Exception:  # noqa: BLE001
            pass
        out = []
        for p in self.probed:
            try:
                pids = {int(proc.pid) for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(p.device.handle)}
            except Exception as exc:  # noqa: BLE001
                out.append(f"{p.label}: could not list the processes using it ({exc})")
                continue
            others = sorted(pids - ours)
            if not others:
                continue
            where = f"{p.label} ({p.device.uuid})"
            if pids & ours or len(others) > 1:
                out.append(f"{where} is shared with other processes (pids {', '.join(map(str, others))}): "
                           "its energy, power and utilization include their work")
            else:
                out.append(f"{where}: NVML lists pid {others[0]} but not this process ({os.getpid()}); in a container "
                           "NVML shows host pids, so it may be this run — otherwise another process shares the GPU")
        return out


NO_GPU_REASON = "the run uses no CUDA device"
