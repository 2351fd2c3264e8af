"""Expands a suite into runs, each keyed by a stable hash of its resolved configuration."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from energybench.suite import (
    BackboneEntry,
    MethodEntry,
    Suite,
    TaskEntry,
    method_settings,
    stable_hash,
)
from energybench.train.settings import TrainingSettings


class RunSpec(BaseModel):
    """Everything a child process needs to execute one run, JSON-serialisable."""

    run_id: str
    suite: str
    backbone: BackboneEntry
    task: TaskEntry
    method: MethodEntry
    method_settings: dict[str, Any]
    seed: int
    training: TrainingSettings
    measure: dict[str, Any]
    device: str

    @property
    def title(self) -> str:
        return f"{self.backbone.display} · {self.task.name} · {self.method.display} · seed {self.seed}"

    def config(self) -> dict[str, Any]:
        """The resolved configuration that identifies the run (hashed into run_id)."""
        return {
            "backbone": self.backbone.model_dump(exclude={"label"}),
            "task": self.task.model_dump(),
            "method": {"name": self.method.name, "label": self.method.display, "settings": self.method_settings},
            "seed": self.seed,
            "training": self.training.model_dump(),
        }


def resolved_training(suite: Suite, method: MethodEntry) -> TrainingSettings:
    overrides = method.training.model_dump(exclude_none=True)
    return suite.training.model_copy(update=overrides)


def expand(suite: Suite) -> list[RunSpec]:
    """backbone × task × method × seed, in that nesting order."""
    runs = []
    for b in suite.backbones:
        for t in suite.tasks:
            for m in suite.methods:
                settings = method_settings(m).model_dump(mode="json")
                for seed in suite.seeds:
                    spec = RunSpec(run_id="", suite=suite.name, backbone=b, task=t, method=m,
                                   method_settings=settings, seed=seed, training=resolved_training(suite, m),
                                   measure=suite.measure.model_dump(mode="json"), device=suite.device)
                    runs.append(spec.model_copy(update={"run_id": stable_hash(spec.config())}))
    return runs
