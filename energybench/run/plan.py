"""Expands a suite into runs, each keyed by a stable hash of its resolved configuration."""

from __future__ import annotations

from typing import Any, Literal

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
    role: Literal["final", "trial"] = "final"
    trial: dict[str, Any] | None = None  # a search trial: its study, number and parameters (not hashed)

    @property
    def title(self) -> str:
        title = f"{self.backbone.display} · {self.task.name} · {self.method.display} · seed {self.seed}"
        if self.role == "trial" and self.trial:
            title += f" · trial {self.trial.get('number')} (lr {self.training.learning_rate:.3g})"
        return title

    def config(self) -> dict[str, Any]:
        """The resolved configuration that identifies the run (hashed into run_id).

        A search trial adds ``role: trial`` (so it never shares a hash with a final run) but not its trial
        number: a trial re-asked with the same parameters after a kill finds its finished row.
        """
        cfg = {
            "backbone": self.backbone.model_dump(exclude={"label", "shape"}),
            "task": self.task.model_dump(),
            "method": {"name": self.method.name, "label": self.method.display, "settings": self.method_settings},
            "seed": self.seed,
            "training": self.training.model_dump(),
        }
        if self.role == "trial":
            cfg["role"] = "trial"
        return cfg


def resolved_training(suite: Suite, method: MethodEntry) -> TrainingSettings:
    overrides = method.training.model_dump(exclude_none=True)
    return suite.training.model_copy(update=overrides)


def expand(suite: Suite, learning_rates: dict[tuple[str, str, str], float] | None = None) -> list[RunSpec]:
    """backbone × task × method × seed, in that nesting order.

    ``learning_rates``: a search's chosen value per (backbone label, task, method label); it replaces the
    resolved training learning rate of those runs.
    """
    learning_rates = learning_rates or {}
    runs = []
    for b in suite.backbones:
        for t in suite.tasks:
            for m in suite.methods:
                settings = method_settings(m).model_dump(mode="json")
                training = resolved_training(suite, m)
                lr = learning_rates.get((b.display, t.name, m.display))
                if lr is not None:
                    training = training.model_copy(update={"learning_rate": lr})
                for seed in suite.seeds:
                    spec = RunSpec(run_id="", suite=suite.name, backbone=b, task=t, method=m,
                                   method_settings=settings, seed=seed, training=training,
                                   measure=suite.measure.model_dump(mode="json"), device=suite.device)
                    runs.append(spec.model_copy(update={"run_id": stable_hash(spec.config())}))
    return runs
