"""Full fine-tuning: every parameter trains. The reference every ratio is taken against."""

from __future__ import annotations

from torch import nn

from energybench.methods.base import ApplyContext, Method


class FullFineTuning(Method):
    name = "full_ft"
    summary = "every parameter trains (the baseline for every % column)"
    paper = "—"

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
