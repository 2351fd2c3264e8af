"""Gradient checkpointing's recomputation in the accounting: the checkpoints' inputs plus the largest segment.

A toy whose saves are counted by hand: ``pre`` (Linear d→d) then n checkpointed segments, each Linear d→4d,
ReLU, Linear 4d→d (reentrant, as ``gradient_checkpointing_enable`` runs them), loss = mean of the output
squared. Forward saves: the input of ``pre``, each segment's input (the checkpoint keeps it), the output that
``pow`` squares — (n + 2) tensors of B·d floats. Recomputing one segment saves the ReLU's output (B·4d; the
second Linear saves that same tensor as its input, the first its segment's input, already counted), and
segments are recomputed one at a time, so the backward adds 4·B·d floats once, whatever n is.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from energybench.measure.accounting import account_training_step

B, D = 3, 8
FLOAT = 4


class Segment(nn.Module):
    def __init__(self, ckpt: bool):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(D, 4 * D), nn.ReLU(), nn.Linear(4 * D, D))
        self.ckpt = ckpt

    def forward(self, x):
        return checkpoint(self.body, x, use_reentrant=True) if self.ckpt else self.body(x)


class Toy(nn.Module):
    def __init__(self, n: int, ckpt: bool):
        super().__init__()
        torch.manual_seed(0)
        self.pre = nn.Linear(D, D)
        self.segments = nn.Sequential(*[Segment(ckpt) for _ in range(n)])

    def forward(self, x):
        return self.segments(self.pre(x))


def _loss(model, batch):
    return model(batch["x"]).pow(2).mean()


def _activations(n: int, ckpt: bool, mode: str) -> int:
    cost = account_training_step(Toy(n, ckpt), _loss, {"x": torch.randn(B, D)},
                                 lambda ps: torch.optim.AdamW(ps), mode=mode)
    return cost.memory.activations_bytes


@pytest.mark.parametrize("mode", ["fake", "real"])
@pytest.mark.parametrize("n", [1, 3])
def test_checkpointed_step_holds_the_checkpoints_and_one_recomputed_segment(mode, n):
    assert _activations(n, True, mode) == ((n + 2) * B * D + 4 * B * D) * FLOAT


@pytest.mark.parametrize("mode", ["fake", "real"])
def test_without_checkpointing_nothing_is_recomputed(mode):
    # every segment's saves at once: its input, the ReLU output; plus pre's input and the squared output
    n = 3
    assert _activations(n, False, mode) == (2 * B * D + n * (B * D + 4 * B * D)) * FLOAT
