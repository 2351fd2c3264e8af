"""The total-only FLOP counter: torch's formulas without module tracking, so the same totals."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from energybench.measure.flops import TotalFlops
from energybench.models.backbones import load_backbone


def test_a_linear_layers_step_counts_two_flops_per_multiply_add_in_each_of_three_matmuls():
    lin = torch.nn.Linear(8, 3)
    x = torch.ones(4, 8, requires_grad=True)
    with TotalFlops() as counter:
        lin(x).sum().backward()
    # forward x·Wᵀ, backward grad·W (input) and gradᵀ·x (weight): 2·4·8·3 each
    assert counter.get_total_flops() == 3 * 2 * 4 * 8 * 3


def test_totals_equal_torchs_module_tracking_counter_on_a_transformer_step():
    model = load_backbone("tiny-t5", seed=0).model
    ids = torch.randint(3, 200, (2, 10), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "labels": ids[:, :4].clone()}
    totals = []
    for counter in (TotalFlops(), FlopCounterMode(display=False)):
        with counter:
            model(**batch).loss.backward()
        totals.append(counter.get_total_flops())
    assert totals[0] == totals[1] > 0
