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
import time
from typing import Any, Callable, Iterable

from energybench.measure.devices import cuda_ordinals, resolve_gpus, torch_cuda_uuid
from energybench.measure.figures import MEASURED, Figures
from energybench.measure.gpu_integration import (
    combine_devices,
    device_detail,
    device_figures,
)
from energybench.measure.nvml_probe import GPU_FIELDS, ProbedDevice, probe
from energybench.measure.nvml_sampler import NvmlSampler
from energybench.measure.settings import MeasureSettings


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
        return self._figures(*self.sampler.close_window(window))

    def reading(self, window: str) -> Figures:
        """The window's figures so far (one extra sample now, on copies of its sums); the window stays open."""
        if self.sampler is None:
            return self.end(window)
        return self._figures(*self.sampler.peek_window(window))

    def _figures(self, sums, t1: float) -> Figures:
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
