"""The background thread that samples every GPU of a run at a fixed interval and feeds each open window."""

from __future__ import annotations

import copy
import threading
import time
from typing import Callable

from energybench.measure.gpu_integration import DeviceWindow
from energybench.measure.nvml_probe import ProbedDevice, read_device


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

    def peek_window(self, name: str) -> tuple[list[DeviceWindow], float]:
        """Take a sample and hand back copies of the window's sums so far; the window stays open."""
        self.sample_once()
        with self._lock:
            return copy.deepcopy(self._open[name]), self.clock()

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
