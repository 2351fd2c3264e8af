"""How much growth the gate tolerates per metric: defaults, the ``[tool.energybench.compare]`` table of the nearest
pyproject.toml, then ``--threshold NAME=VALUE`` (``5%`` relative to the baseline, or a plain number in the metric's unit)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from energybench.regress.metrics import GROUPS, METRICS
from energybench.regress.sides import CompareInputError

DEFAULT_ALPHA = 0.05
DEFAULT_NOISY_THRESHOLD = "10%"


@dataclass(frozen=True)
class Threshold:
    """How much increase is tolerated: ``value`` × baseline when ``relative``, else ``value`` in the metric's unit."""

    value: float
    relative: bool

    @classmethod
    def parse(cls, text: str | float | int, where: str) -> "Threshold":
        s = str(text).strip()
        try:
            if s.endswith("%"):
                v, rel = float(s[:-1]) / 100.0, True
            else:
                v, rel = float(s), False
        except ValueError:
            raise CompareInputError(f"{where}: threshold {text!r} is not a number or a percentage like 5%") from None
        if v < 0 or math.isnan(v):
            raise CompareInputError(f"{where}: threshold {text!r} must be zero or positive")
        return cls(v, rel)

    def allowance(self, baseline: float) -> float:
        return self.value * abs(baseline) if self.relative else self.value

    def __str__(self) -> str:
        return f"{100 * self.value:g}%" if self.relative else f"{self.value:g}"


def _expand_names(name: str, where: str) -> list[str]:
    if name in GROUPS:
        return GROUPS[name]
    if name in METRICS:
        return [name]
    raise CompareInputError(f"{where}: unknown metric or group {name!r}; groups: {', '.join(GROUPS)}; "
                            f"metrics: {', '.join(METRICS)}")


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` (default: the current directory)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file():
            return d / "pyproject.toml"
    return None


def pyproject_settings(path: Path | None) -> dict[str, Any]:
    """The ``[tool.energybench.compare]`` table of ``path`` (empty if none)."""
    if path is None:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CompareInputError(f"{path}: cannot read it as TOML ({exc})") from None
    table = data.get("tool", {}).get("energybench", {}).get("compare", {})
    if not isinstance(table, dict):
        raise CompareInputError(f"{path}: [tool.energybench.compare] must be a table")
    return table


def resolve_thresholds(cli: list[str], config: dict[str, Any], config_path: Path | None) -> dict[str, Threshold]:
    """Per-metric thresholds: defaults (deterministic 0, noisy 10%) ← pyproject ← command line;
    within each, a group's value applies first and a single metric's overrides it."""
    out = {n: Threshold(0.0, False) if m.deterministic else Threshold.parse(DEFAULT_NOISY_THRESHOLD, "default")
           for n, m in METRICS.items()}
    layers: list[list[tuple[str, Any, str]]] = [
        [(k, v, f"{config_path} [tool.energybench.compare] {k}") for k, v in config.items()
         if k not in ("alpha", "metrics")],
        [],
    ]
    for item in cli:
        if "=" not in item:
            raise CompareInputError(f"--threshold {item!r}: expected NAME=VALUE, e.g. energy=5% or mem_model_bytes=0")
        k, v = item.split("=", 1)
        layers[1].append((k.strip(), v, f"--threshold {item}"))
    for layer in layers:
        for is_group in (True, False):
            for k, v, where in layer:
                if (k in GROUPS) == is_group:
                    t = Threshold.parse(v, where)
                    for n in _expand_names(k, where):
                        out[n] = t
    return out
