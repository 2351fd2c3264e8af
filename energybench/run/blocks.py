"""The suite's ``search:`` and ``target:`` blocks (schema only; the logic is in run/search.py and run/target.py).

``search:`` follows READ (arXiv 2305.15348, §4): the learning rate of every
(backbone, task, method) is tuned by Bayesian search over a log-uniform range
(READ's 1e-6 … 3e-3), here with Optuna's TPE sampler, before the suite's seeds
train with the value found. ``target:`` follows MLPerf Training: a run's cost
is measured up to the first validation at or above a quality target, given per
task (absolute) or as a fraction of a reference method's best validation score
on the same backbone, task and seed (relative).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)
MAX_TRIALS = 32


class SearchSettings(BaseModel):
    """A learning-rate search per (backbone, task, method); trials train with the suite's first seed."""

    model_config = _STRICT
    parameter: Literal["learning_rate"] = "learning_rate"
    low: float = Field(1.0e-6, gt=0)
    high: float = Field(3.0e-3, gt=0)
    log: bool = True
    trials: PositiveInt = Field(16, le=MAX_TRIALS)
    sampler: Literal["tpe"] = "tpe"
    startup_trials: PositiveInt = Field(10, description="TPE's random start-up trials (Optuna's default: 10)")
    seed: int = 0
    objective: Literal["val_score"] = "val_score"
    pruner: Literal["none", "median"] = Field("none", description="median: Optuna's MedianPruner on validation scores")
    pruner_startup_trials: NonNegativeInt = Field(5, description="trials finished before pruning starts (Optuna: 5)")
    pruner_warmup_steps: NonNegativeInt = Field(0, description="steps before a trial can be pruned (Optuna: 0)")

    @model_validator(mode="after")
    def _range(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        return self


class TargetSettings(BaseModel):
    """Absolute (``{task: score}``) or relative (``{relative_to: METHOD, fraction: F}``) quality targets.

    Scores are on the task's metric scale as the report prints it (e.g. 90.0 for 90% accuracy).
    """

    model_config = _STRICT
    scores: dict[str, float] | None = None
    relative_to: str | None = None
    fraction: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        """A mapping without ``relative_to`` is a per-task table of absolute targets."""
        if isinstance(data, dict) and "relative_to" not in data and "fraction" not in data and "scores" not in data:
            return {"scores": data}
        return data

    @model_validator(mode="after")
    def _one_kind(self):
        if self.scores is not None and (self.relative_to or self.fraction is not None):
            raise ValueError("give either per-task scores or {relative_to, fraction}, not both")
        if self.scores is None:
            if not self.relative_to or self.fraction is None:
                raise ValueError("a relative target needs both relative_to (a method) and fraction (0–1]")
        elif not self.scores:
            raise ValueError("give at least one task's score")
        return self

    @property
    def relative(self) -> bool:
        return self.scores is None

    def check_against(self, tasks: list[str], methods: list[tuple[str, str]]) -> None:
        """Cross-check with the suite: scores name its tasks; relative_to names one of its methods
        (``methods`` as (label, registered name) pairs)."""
        if self.scores is not None:
            unknown = sorted(set(self.scores) - set(tasks))
            if unknown:
                raise ValueError(f"{', '.join(unknown)} not among the suite's tasks ({', '.join(tasks)})")
        elif reference_label(self.relative_to, methods) is None:
            raise ValueError(f"relative_to: {self.relative_to!r} is not one of the suite's methods "
                             f"({', '.join(label for label, _ in methods)})")


def reference_label(name: str | None, methods: list[tuple[str, str]]) -> str | None:
    """The display label of the reference method: a label equal to ``name``, else the one method registered as it."""
    labels = [label for label, _ in methods]
    if name in labels:
        return name
    named = [label for label, registered in methods if registered == name]
    return named[0] if len(named) == 1 else None
