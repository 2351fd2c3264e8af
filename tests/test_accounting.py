"""mem_model_bytes: hand-computable on a tiny model, identical run to run, larger for full_ft than lora."""

from __future__ import annotations

import torch
from energybench.methods.base import ApplyContext
from energybench.methods.full_ft import FullFineTuning
from energybench.methods.lora import LoRA
from torch import nn

from energybench.measure.accounting import model_memory, train_step_flops
from energybench.models.backbones import load_backbone


def _adamw(params):
    return torch.optim.AdamW(params, lr=1e-3)


def test_linear_layer_bytes_equal_the_hand_count():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    mem = model_memory(model, lambda m: m(x).sum(), _adamw)
    params = (4 * 3 + 3) * 4                # fp32 weight + bias
    grads = params
    adamw = 2 * params + 2 * 4              # exp_avg, exp_avg_sq, and a fp32 `step` scalar per tensor
    activations = 2 * 4 * 4                 # addmm saves its input x (the weight is a parameter, counted once)
    assert (mem.params_bytes, mem.grads_bytes, mem.optimizer_bytes, mem.activations_bytes) == (params, grads, adamw, activations)
    assert mem.total_bytes == params + grads + adamw + activations


def _t5_loss(method):
    model = method.apply(load_backbone("tiny-t5", seed=0).model, ApplyContext(total_steps=10, seed=0))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (4, 16), generator=g)
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(3, 200, (4, 4), generator=g))
    return model, lambda m: m(**batch).loss


def test_mem_model_bytes_is_identical_across_runs_and_larger_for_full_ft_than_lora():
    full, full_loss = _t5_loss(FullFineTuning())
    a = model_memory(full, full_loss, _adamw)
    b = model_memory(full, full_loss, _adamw)
    assert a == b
    lora, lora_loss = _t5_loss(LoRA())
    c = model_memory(lora, lora_loss, _adamw)
    assert a.total_bytes > c.total_bytes
    assert a.grads_bytes > c.grads_bytes and a.optimizer_bytes > c.optimizer_bytes
    assert train_step_flops(full, full_loss) > train_step_flops(lora, lora_loss) > 0
