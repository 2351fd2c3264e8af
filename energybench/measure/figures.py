"""A figure is a value with its provenance, or null with the reason it is null.

Provenance is one of MEASURED (hardware counter, CUDA allocator, OS),
INTEGRATED (power samples), ESTIMATED (a model such as READ's utilization×p0
or CodeCarbon's TDP), MODELLED (the deterministic accounting) or UNAVAILABLE
(value is None, reason says why). Result
rows store values in one dict and provenance/reasons in two others, so tables
stay flat for pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MEASURED = "measured"
INTEGRATED = "integrated"
ESTIMATED = "estimated"
MODELLED = "modelled"  # computed from the model's shapes (the accounting), the same on every machine
UNAVAILABLE = "unavailable"
PROVENANCES = (MEASURED, INTEGRATED, ESTIMATED, MODELLED, UNAVAILABLE)


@dataclass
class Figures:
    """Named values of one window with how each was obtained."""

    values: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def put(self, name: str, value: Any, provenance: str = MEASURED, reason: str | None = None) -> None:
        if provenance not in PROVENANCES:
            raise ValueError(f"unknown provenance {provenance!r}")
        self.values[name] = value
        self.provenance[name] = provenance
        if value is None or provenance == UNAVAILABLE:
            self.values[name] = None
            self.provenance[name] = UNAVAILABLE
            self.reasons[name] = reason or "not measured"
        elif reason:
            self.reasons[name] = reason

    def null(self, name: str, reason: str) -> None:
        self.put(name, None, UNAVAILABLE, reason)

    def update(self, other: "Figures") -> None:
        self.values.update(other.values)
        self.provenance.update(other.provenance)
        self.reasons.update(other.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {**self.values, "provenance": dict(self.provenance), "reasons": dict(self.reasons)}
