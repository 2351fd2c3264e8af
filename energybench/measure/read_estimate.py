"""READ's GPU energy estimate (arXiv 2305.15348, Eq. 15-16): Σ uᵢ/100 · p0 · Δtᵢ from NVML utilization.

Each utilization sample covers the time since the previous one (NVML's
utilization describes the recent past). With ``read_period_s`` set,
utilization is instead taken at t0 + P, t0 + 2P, … (the first sample at or
after each instant) and weighs P, as READ's once-a-minute protocol does; the
part of the window after the last full period weighs its length, so a window
shorter than P is not a silent zero. Kept so READ's tables can be reproduced
and its error against the energy counter shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from energybench.measure.figures import ESTIMATED, MEASURED, Figures


@dataclass
class ReadBusyTime:
    """Σ uᵢ/100 · Δtᵢ over one window (seconds): READ's estimate is p0 · busy_s."""

    t0: float
    read_period_s: float | None = None
    busy_s: float = 0.0
    grid_next: float | None = None
    u_last_t: float | None = None
    u_last: float | None = None
    n: int = 0

    def __post_init__(self):
        if self.read_period_s:
            self.grid_next = self.t0 + self.read_period_s

    def add(self, t: float, util: float) -> None:
        self.n += 1
        if self.read_period_s:
            while self.grid_next <= t:
                self.busy_s += util / 100.0 * self.read_period_s
                self.grid_next += self.read_period_s
        elif self.u_last_t is not None:
            self.busy_s += util / 100.0 * (t - self.u_last_t)
        self.u_last_t, self.u_last = t, util

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
            return max(self.n - 1, 0)
        if self.u_last_t is None:
            return 0
        full = round((self.grid_next - self.t0) / self.read_period_s) - 1
        return full + (1 if self._remainder_s() > 0 else 0)


def put_read_figures(f: Figures, p, read: ReadBusyTime, u_n: int, u_sum: float, last_error: str | None) -> None:
    """Utilization's mean, p0, READ's estimate and its error against the counter, into ``f`` (``p``: a ProbedDevice)."""
    w = read
    if p.p0_kw is not None:
        f.put("read_p0_kw", p.p0_kw, MEASURED if p.p0_source.startswith("NVML") else ESTIMATED, p.p0_source)
    else:
        f.null("read_p0_kw", p.p0_error)
    if p.util_error:
        f.null("gpu_util_mean_pct", p.util_error)
        f.null("gpu_energy_read_kwh", p.util_error)
    else:
        if u_n:
            f.put("gpu_util_mean_pct", u_sum / u_n, MEASURED, "mean of nvmlDeviceGetUtilizationRates samples")
        else:
            f.null("gpu_util_mean_pct", f"no utilization sample on {p.label} ({last_error})")
        if p.p0_kw is None:
            f.null("gpu_energy_read_kwh", p.p0_error)
        elif w.read_samples < 1:
            f.null("gpu_energy_read_kwh", f"no utilization sample after the window's start on {p.label}")
        else:
            protocol = (f"one utilization sample per {w.read_period_s:g} s" if w.read_period_s
                        else f"{w.read_samples} utilization samples")
            f.put("gpu_energy_read_kwh", p.p0_kw * w.read_busy_s() / 3600.0, ESTIMATED,
                  f"READ Eq. 15-16: Σ u/100 · p0 · Δt, p0 = {p.p0_kw:g} kW ({p.p0_source}), {protocol}")
    put_read_error(f)


def put_read_error(f: Figures) -> None:
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
