"""``energybench doctor``: what this machine can measure, and how.

Each section is checked on its own and a failure becomes a line of text, so
the report is always complete and :func:`doctor_report` never raises. It
starts CodeCarbon's offline tracker once (~2 s) to report the mode it will
really use, rather than guessing it.
"""

from __future__ import annotations

import glob
import os
import platform
from importlib import metadata
from typing import Callable

from energybench.measure.devices import cuda_ordinals, resolve_gpus
from energybench.measure.nvml_probe import (
    GPU_FIELDS,
    INSTANT,
    POWER_SOURCE_REASON,
    probe,
)

RAPL_GLOB = "/sys/class/powercap/intel-rapl*"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except Exception:  # noqa: BLE001
        return "not installed"


def software_section() -> list[str]:
    import torch

    cuda = torch.version.cuda or "none (CPU-only build)"
    lines = [f"python {platform.python_version()} · torch {torch.__version__} (CUDA build: {cuda}) · "
             f"transformers {_version('transformers')} · peft {_version('peft')} · "
             f"codecarbon {_version('codecarbon')} · nvidia-ml-py {_version('nvidia-ml-py')}"]
    if torch.cuda.is_available():
        names = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
        lines.append(f"torch sees {torch.cuda.device_count()} CUDA device(s): {names}")
    else:
        lines.append("torch sees no CUDA device: runs use the CPU; CUDA memory peaks will be null (\"no CUDA device\")")
    return lines


def gpu_section(nvml=None) -> list[str]:
    if nvml is None:
        import pynvml as nvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        return [f"NVML not available: {exc}",
                f"  every GPU field ({', '.join(GPU_FIELDS[:3])}, …) will be null with this reason"]
    try:
        lines = []
        try:
            driver = nvml.nvmlSystemGetDriverVersion()
            lines.append(f"NVML available, driver {driver.decode() if isinstance(driver, bytes) else driver}")
        except Exception:  # noqa: BLE001
            lines.append("NVML available")
        count = nvml.nvmlDeviceGetCount()
        lines.append(f"{count} GPU(s), NVML order (PCI bus):")
        from energybench.measure.devices import GpuDevice

        for i in range(count):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            p = probe(nvml, GpuDevice(cuda_index=i, nvml_index=i, uuid=str(nvml.nvmlDeviceGetUUID(h)), handle=h))
            counter = "yes" if p.counter_error is None else f"no ({p.counter_error})"
            power = (f"{p.power_source} ({POWER_SOURCE_REASON[p.power_source]})" if p.power_source
                     else f"no ({p.power_error})")
            limit = (f"{1000 * p.p0_kw:.0f} W → READ p0 {p.p0_kw:.3f} kW" if p.p0_kw is not None else p.p0_error)
            util = "yes" if p.util_error is None else f"no ({p.util_error})"
            lines += [f"  nvml {i}: {p.name}, {p.device.uuid}",
                      f"    energy counter: {counter}",
                      f"    power: {power}",
                      f"    default power limit: {limit}",
                      f"    utilization: {util}"]
            if p.power_source and p.power_source != INSTANT:
                lines.append("    (no instantaneous power field: short windows' integrated energy is smoothed)")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ordinals = cuda_ordinals(None)
        lines.append(f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "CUDA_VISIBLE_DEVICES unset")
        for d in resolve_gpus(ordinals, nvml) if ordinals else []:
            where = f"nvml {d.nvml_index} ({d.uuid}) by {d.mapped_by}" if d.error is None else d.error
            lines.append(f"  cuda:{d.cuda_index} → {where}" + (f"; caveat: {d.caveat}" if d.caveat else ""))
        return lines
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def rapl_section(pattern: str = RAPL_GLOB) -> list[str]:
    zones = sorted(glob.glob(pattern))
    if not zones:
        return [f"RAPL: not present ({pattern} absent): CodeCarbon estimates CPU energy from TDP and load"]
    lines = []
    for z in zones:
        name = _read(os.path.join(z, "name")) or os.path.basename(z)
        try:
            _read(os.path.join(z, "energy_uj"), strict=True)
            lines.append(f"RAPL {os.path.basename(z)} ({name}): readable")
        except OSError as exc:
            lines.append(f"RAPL {os.path.basename(z)} ({name}): not readable ({exc.strerror or exc}); "
                         "CodeCarbon needs read access to energy_uj (root, or chmod a+r)")
    return lines


def _read(path: str, strict: bool = False) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        if strict:
            raise
        return None


def codecarbon_section() -> list[str]:
    from energybench.measure.host import CodeCarbonTotals, make_offline_tracker
    from energybench.measure.settings import MeasureSettings

    settings = MeasureSettings()
    cc = CodeCarbonTotals(make_offline_tracker(settings))
    cc.start()
    try:
        desc, prov, cpu_reason, ram_reason = cc.method()
        intensity = cc.carbon_intensity_kg_per_kwh()
    finally:
        cc.stop()
    return [f"CodeCarbon mode: {desc}",
            f"  cpu_energy_kwh will be {prov}: {cpu_reason}",
            f"  ram_energy_kwh will be estimated: {ram_reason}",
            f"  carbon intensity ({settings.country_iso_code}, offline): {intensity:.3f} kg CO2e/kWh"]


def memory_section() -> list[str]:
    from energybench.measure.memory import hwm_reset_works

    why = hwm_reset_works()
    if why is None:
        return ["peak RSS: exact per window (kernel VmHWM, reset through /proc/self/clear_refs)"]
    return [f"peak RSS: sampled with psutil (peak reset unavailable: {why}); short peaks can be missed"]


SECTIONS: list[tuple[str, Callable[[], list[str]]]] = [
    ("Software", software_section),
    ("GPU energy (NVML)", gpu_section),
    ("CPU energy counters (RAPL)", rapl_section),
    ("Host energy (CodeCarbon)", codecarbon_section),
    ("Memory", memory_section),
]


def doctor_report(sections: list[tuple[str, Callable[[], list[str]]]] | None = None) -> str:
    """The doctor's text. Never raises: a section that fails reports its error instead."""
    out = ["energybench doctor: what this machine can measure, and how", ""]
    for title, fn in sections or SECTIONS:
        out.append(title)
        try:
            body = fn()
        except Exception as exc:  # noqa: BLE001 - the doctor must always answer
            body = [f"could not check: {type(exc).__name__}: {exc}"]
        out += [f"  {line}" for line in body]
        out.append("")
    return "\n".join(out).rstrip() + "\n"
