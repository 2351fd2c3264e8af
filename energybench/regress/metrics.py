"""The metric catalogue of the regression gate: where each comparable figure sits in a row, whether it is deterministic,
and the groups (`deterministic`, `noisy`, `energy`, …) that ``--metrics`` and thresholds accept."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from energybench.regress.sides import CompareInputError


@dataclass(frozen=True)
class MetricDef:
    """A comparable figure: where it sits in a row, and whether it is deterministic."""

    name: str
    section: str  # "row", "accounting", "to_target" (cost to target), or a window name
    field: str
    deterministic: bool

    def value(self, row: dict) -> tuple[float | None, str | None]:
        """The figure of ``row`` and, when it is null, the reason recorded for it."""
        if self.section == "row":
            v = row.get(self.field)
            return (float(v) if v is not None else None), (None if v is not None else "not recorded")
        if self.section == "to_target":
            return self._to_target(row)
        figs = row.get("accounting") if self.section == "accounting" else (row.get("windows") or {}).get(self.section)
        figs = figs or {}
        v = figs.get(self.field)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v):
            return float(v), None
        reason = (figs.get("reasons") or {}).get(self.field) or "not recorded by the run"
        return None, reason

    def _to_target(self, row: dict) -> tuple[float | None, str | None]:
        """A figure of the run's first validation at or above its target; null with why (not reached, no target)."""
        point = row.get("to_target")
        if not point:
            return None, row.get("to_target_reason") or "the run had no target (suite without a target: block)"
        v = point.get(self.field)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v):
            return float(v), None
        return None, (point.get("reasons") or {}).get(self.field) or "not recorded at the target's validation"


def _m(name: str, section: str, fld: str | None = None, det: bool = False) -> MetricDef:
    return MetricDef(name, section, fld or name, det)


METRICS: dict[str, MetricDef] = {m.name: m for m in (
    _m("mem_model_bytes", "accounting", det=True),
    _m("mem_params_bytes", "accounting", det=True),
    _m("mem_grads_bytes", "accounting", det=True),
    _m("mem_optimizer_bytes", "accounting", det=True),
    _m("mem_activations_bytes", "accounting", det=True),
    _m("train_flops", "accounting", det=True),
    _m("infer_flops", "accounting", det=True),
    _m("trainable_params", "row", det=True),
    _m("total_params", "row", det=True),
    _m("gpu_energy_kwh", "train"),
    _m("gpu_energy_power_kwh", "train"),
    _m("gpu_energy_read_kwh", "train"),
    _m("cpu_energy_kwh", "train"),
    _m("ram_energy_kwh", "train"),
    _m("peak_gpu_mem_bytes", "train"),
    _m("peak_rss_bytes", "train"),
    _m("step_time_s", "train"),
    _m("infer_latency_ms_p50", "inference"),
    _m("infer_latency_ms_p99", "inference"),
    _m("infer_peak_gpu_mem_bytes", "inference", "peak_gpu_mem_bytes"),
    # cost to target (MLPerf-style): steps with a fixed seed are exact; time and energy are noisy
    _m("to_target_steps", "to_target", "step", det=True),
    _m("to_target_examples", "to_target", "examples", det=True),
    _m("to_target_wall_s", "to_target", "wall_s"),
    _m("to_target_energy_kwh", "to_target", "energy_kwh"),
    _m("to_target_gpu_energy_kwh", "to_target", "gpu_energy_kwh"),
)}
GROUPS: dict[str, list[str]] = {
    "deterministic": [n for n, m in METRICS.items() if m.deterministic],
    "noisy": [n for n, m in METRICS.items() if not m.deterministic],
    "energy": [n for n in METRICS if n.endswith("_energy_kwh") or "_energy_" in n],
    "latency": ["infer_latency_ms_p50", "infer_latency_ms_p99"],
    "peak_memory": ["peak_gpu_mem_bytes", "infer_peak_gpu_mem_bytes", "peak_rss_bytes"],
    "memory": [n for n in METRICS if n.startswith("mem_")],
    "flops": ["train_flops", "infer_flops"],
    "to_target": ["to_target_steps", "to_target_examples", "to_target_wall_s", "to_target_energy_kwh",
                  "to_target_gpu_energy_kwh"],
}
GROUPS["all"] = list(METRICS)


def resolve_metrics(spec: str | Iterable[str]) -> list[MetricDef]:
    """``deterministic``, ``noisy``, ``all``, a group or metric names, comma-separated."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[str] = []
    for n in names:
        if n in GROUPS:
            out += GROUPS[n]
        elif n in METRICS:
            out.append(n)
        else:
            raise CompareInputError(f"--metrics: unknown metric or group {n!r}; groups: {', '.join(GROUPS)}; "
                                    f"metrics: {', '.join(METRICS)}")
    return [METRICS[n] for n in dict.fromkeys(out)]
