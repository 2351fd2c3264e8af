"""Peak memory per window: CUDA allocator peaks and the process's peak resident set.

Both peaks are process-wide high-water marks that can be reset, so windows
may nest: at every window boundary the current peak is folded into every open
window's running maximum and then reset. An outer window therefore sees the
largest peak of any stretch inside it, and an inner window only its own.

- ``peak_gpu_mem_bytes`` / ``peak_gpu_reserved_bytes``: ``torch.cuda.max_memory_allocated``
  / ``max_memory_reserved`` over the window, summed over the run's CUDA devices.
  Tensors only; the CUDA context and other processes are not included (the
  NVML figure ``peak_gpu_mem_nvml_bytes`` from :mod:`energybench.measure.nvml` is the
  board-wide view).
- ``peak_rss_bytes``: the kernel's own high-water mark of this process's
  resident set (``VmHWM``), reset at each boundary through
  ``/proc/self/clear_refs`` (Linux ≥ 4.0), so it is exact, not sampled. Where
  that reset is not allowed, a thread samples RSS with psutil every
  ``measure.rss_interval_s`` and the reason says peaks shorter than that can
  be missed. (``ru_maxrss`` is not used: it is the same mark, and without
  the reset it is a whole-process-lifetime maximum, not a window's.)
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable, Iterable

from energybench.measure.devices import cuda_ordinals
from energybench.measure.figures import MEASURED, Figures
from energybench.measure.settings import MeasureSettings

MEMORY_FIELDS = ("peak_gpu_mem_bytes", "peak_gpu_reserved_bytes", "peak_rss_bytes")
NO_CUDA = "no CUDA device"

_PROC_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


class _FoldedPeak:
    """Running maxima per open window of a resettable process-wide peak."""

    def __init__(self, read: Callable[[], int], reset: Callable[[], None]):
        self._read, self._reset = read, reset
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def fold(self) -> None:
        with self._lock:
            value = self._read()
            for w in self._open:
                self._open[w] = max(self._open[w], value)
            self._reset()

    def begin(self, window: str) -> None:
        self.fold()
        with self._lock:
            self._open[window] = 0

    def end(self, window: str) -> int:
        self.fold()
        with self._lock:
            return self._open.pop(window)


# ------------------------------------------------------------------- RSS
def read_vm_hwm_bytes() -> int:
    with open(_PROC_STATUS, encoding="ascii") as fh:
        m = re.search(r"^VmHWM:\s+(\d+)\s+kB", fh.read(), re.MULTILINE)
    if not m:
        raise OSError("no VmHWM line in /proc/self/status")
    return int(m.group(1)) * 1024


def reset_vm_hwm() -> None:
    """Reset the kernel's peak-RSS mark to the current RSS (writes "5" to /proc/self/clear_refs)."""
    with open(_CLEAR_REFS, "w", encoding="ascii") as fh:
        fh.write("5")


def hwm_reset_works() -> str | None:
    """None when the exact per-window peak RSS is available here, else why not."""
    try:
        read_vm_hwm_bytes()
        reset_vm_hwm()
        return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


class _SampledRss:
    """Fallback: psutil RSS sampled on a daemon thread; ``read`` gives the max since the last ``reset``."""

    def __init__(self, interval_s: float):
        import psutil

        self._proc = psutil.Process()
        self.interval_s = interval_s
        self._max = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="energybench-rss", daemon=True)

    def _sample(self) -> None:
        try:
            self._max = max(self._max, self._proc.memory_info().rss)
        except Exception:  # noqa: BLE001
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def read(self) -> int:
        self._sample()
        return self._max

    def reset(self) -> None:
        self._max = 0
        self._sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 1)


# ------------------------------------------------------------------ CUDA
def _cuda_peaks(ordinals: list[int]) -> tuple[Callable[[], int], Callable[[], int], Callable[[], None]]:
    import torch

    def allocated() -> int:
        return sum(int(torch.cuda.max_memory_allocated(i)) for i in ordinals)

    def reserved() -> int:
        return sum(int(torch.cuda.max_memory_reserved(i)) for i in ordinals)

    def reset() -> None:
        for i in ordinals:
            torch.cuda.reset_peak_memory_stats(i)

    return allocated, reserved, reset


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


class MemoryTracker:
    """The Meter's memory tracker: CUDA allocator peaks and peak RSS per window (see the module docstring)."""

    def __init__(self, settings: MeasureSettings, devices: Iterable[Any] | None = None):
        self.settings = settings
        self._devices_arg = None if devices is None else list(devices)
        self._rss: _FoldedPeak | None = None
        self._rss_how = ""
        self._rss_error: str | None = None
        self._sampler: _SampledRss | None = None
        self._alloc: _FoldedPeak | None = None
        self._reserved: _FoldedPeak | None = None
        self._cuda_why = NO_CUDA

    def start(self) -> None:
        why = hwm_reset_works()
        if why is None:
            self._rss = _FoldedPeak(read_vm_hwm_bytes, reset_vm_hwm)
            self._rss_how = "kernel peak-RSS mark (VmHWM), reset at each window boundary: exact"
        else:
            try:
                self._sampler = _SampledRss(self.settings.rss_interval_s)
                self._sampler.start()
                self._rss = _FoldedPeak(self._sampler.read, self._sampler.reset)
                self._rss_how = (f"psutil RSS sampled every {self.settings.rss_interval_s:g} s (peak-RSS reset "
                                 f"unavailable: {why}); shorter peaks can be missed")
            except Exception as exc:  # noqa: BLE001
                self._rss_error = f"peak RSS not measurable here: {why}; psutil: {exc}"
        ordinals = cuda_ordinals(self._devices_arg)
        if not _cuda_available():
            self._cuda_why = NO_CUDA
        elif not ordinals:
            self._cuda_why = "the run uses no CUDA device"
        else:
            alloc, reserved, reset = _cuda_peaks(ordinals)
            # One reset serves both marks; the second fold must not reset before the first reads.
            self._alloc = _FoldedPeak(alloc, lambda: None)
            self._reserved = _FoldedPeak(reserved, reset)

    def begin(self, window: str) -> None:
        if self._alloc is not None:
            self._alloc.begin(window)
            self._reserved.begin(window)
        if self._rss is not None:
            self._rss.begin(window)

    def end(self, window: str) -> Figures:
        f = Figures()
        if self._alloc is not None:
            f.put("peak_gpu_mem_bytes", self._alloc.end(window), MEASURED,
                  "torch.cuda.max_memory_allocated over the window (reset at its start)")
            f.put("peak_gpu_reserved_bytes", self._reserved.end(window), MEASURED,
                  "torch.cuda.max_memory_reserved over the window (reset at its start)")
        else:
            f.null("peak_gpu_mem_bytes", self._cuda_why)
            f.null("peak_gpu_reserved_bytes", self._cuda_why)
        if self._rss is not None:
            f.put("peak_rss_bytes", self._rss.end(window), MEASURED, self._rss_how)
        else:
            f.null("peak_rss_bytes", self._rss_error or "memory tracker was not started")
        return f

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
