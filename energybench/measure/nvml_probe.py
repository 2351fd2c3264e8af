"""What each GPU's NVML can report (found once at start) and one reading of a device; no state, no thread."""

from __future__ import annotations

from dataclasses import dataclass

from energybench.measure.devices import GpuDevice

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
