"""The learning curve of a run: at every periodic validation, the score and the cumulative cost so far.

:func:`energybench.train.fit` calls the recorder after each validation; the
recorder asks the Meter for a reading of the open ``train`` window (it does
not end it), so each point carries the steps, training examples, wall time
and every energy figure the run has up to and including that validation,
with their provenance. The points go into the run's row as ``curve``; cost to
target (:mod:`energybench.run.target`) and the report's learning curves read
them. Costs include the periodic validations themselves, as the train
window's totals do.
"""

from __future__ import annotations

from typing import Any

CURVE_FIELDS = ("wall_s", "energy_kwh", "gpu_energy_kwh", "gpu_energy_power_kwh", "gpu_energy_read_kwh",
                "cpu_energy_kwh", "ram_energy_kwh")


class CurveRecorder:
    """``on_validation`` for :func:`fit`: appends one point per validation from ``meter.reading(window)``."""

    def __init__(self, meter, window: str = "train"):
        self.meter, self.window = meter, window
        self.points: list[dict[str, Any]] = []

    def __call__(self, step: int, examples: int, score: float) -> None:
        reading = self.meter.reading(self.window)
        point: dict[str, Any] = {"step": step, "examples": examples, "val_score": score}
        provenance, reasons = reading.get("provenance") or {}, reading.get("reasons") or {}
        point["provenance"], point["reasons"] = {}, {}
        for name in CURVE_FIELDS:
            point[name] = reading.get(name)
            if name in provenance:
                point["provenance"][name] = provenance[name]
            if point[name] is None:
                point["reasons"][name] = reasons.get(name) or "not measured by this run's trackers"
        self.points.append(point)
