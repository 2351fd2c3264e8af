"""The plugin contract every fine-tuning method follows.

A method is a class with a pydantic ``Settings`` model (its hyper-parameters,
unknown keys rejected) and up to six hooks. Only ``apply`` is required; the
training loop calls the others when the method overrides them, so a method
without a regularizer costs nothing per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn


class MethodSettings(BaseModel):
    """Base for a method's hyper-parameters; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ApplyContext:
    """What a method may need to know about the run when it attaches.

    total_steps is the number of optimizer steps the loop will take at most
    (AdaLoRA's and dynamic-rank DoRA's schedules are defined over it).
    """

    total_steps: int
    seed: int
    task_name: str = ""


class Method:
    """Base class of a fine-tuning method plugin.

    Subclasses set ``name``, ``summary`` (one line for ``energybench methods``)
    and ``Settings``, and implement ``apply``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    implemented_by: ClassVar[str] = "energybench"
    Settings: ClassVar[type[MethodSettings]] = MethodSettings

    def __init__(self, settings: MethodSettings | None = None):
        self.settings = settings if settings is not None else self.Settings()

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        """Freeze what the method freezes, add what it adds; return what trains."""
        raise NotImplementedError

    def on_step_end(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called after each optimizer step, before gradients are cleared."""

    def checkpoint_allowed(self, model: nn.Module, step: int, total_steps: int) -> bool:
        """Whether the state after optimizer step ``step`` may become the loop's best validation checkpoint.

        The loop restores the best validation weights at the end. A method whose budget changes during
        training (AdaLoRA's ranks, dynamic-rank DoRA's live components) answers False until the budget is
        final, so the model evaluated, measured and described after training always has the final budget.
        Evaluations it refuses are still logged but neither become "best" nor count towards patience.
        """
        return True

    def regularizer(self, model: nn.Module) -> torch.Tensor | None:
        """An extra loss term added to the task loss, or None."""
        return None

    def for_inference(self, model: nn.Module) -> nn.Module:
        """The module users would deploy (merged where the method allows it)."""
        return model

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Method-specific facts for the result row (e.g. final rank pattern)."""
        return {}

    @classmethod
    def overrides(cls, name: str) -> bool:
        """Whether this method defines its own version of hook ``name``."""
        return getattr(cls, name) is not getattr(Method, name)


def freeze(model: nn.Module) -> None:
    """Turn off gradients for every parameter of ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each storage counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
