"""Fake-tensor accounting: byte for byte and FLOP for FLOP what a real CPU step counts, CUDA semantics by hand.

Every expected number here comes from a real CPU computation (accounting_mode
real) or from the shapes by hand, never from the fake path itself.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from energybench.measure.accounting import account_inference, account_training_step
from energybench.methods.base import ApplyContext
from energybench.models.backbones import TINY_PRESETS, load_backbone
from energybench.registry import load_method, method_names


def _adamw(params):
    return torch.optim.AdamW(params, lr=1e-3)


def _loss(model, batch):
    return model(**batch).loss


def _batch(b=4, src=16, tgt=4, pad=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 200, (b, src), generator=g)
    mask = torch.ones_like(ids)
    if pad:
        mask[1, src - 4:] = 0
    return dict(input_ids=ids, attention_mask=mask, labels=torch.randint(3, 200, (b, tgt), generator=g))


def _model(method: str, dropout=0.0, attn="eager"):
    cls = load_method(method)
    bb = load_backbone("tiny-t5", seed=0, config_overrides={"dropout_rate": dropout, "attn_implementation": attn})
    m = cls()
    return m, m.apply(bb.model, ApplyContext(total_steps=10, seed=0))


def _loss_with_reg(method):
    has_reg = method.overrides("regularizer")

    def loss(model, batch):
        out = model(**batch).loss
        reg = method.regularizer(model) if has_reg else None
        return out if reg is None else out + reg

    return loss


@pytest.mark.parametrize("name", method_names())
def test_fake_equals_real_for_every_method(name):
    """Dropout 0, eager attention, a padded batch: the same four parts and the same FLOPs."""
    method, model = _model(name)
    batch = _batch()
    real = account_training_step(model, _loss_with_reg(method), batch, _adamw, mode="real", semantics="cpu")
    fake = account_training_step(model, _loss_with_reg(method), batch, _adamw, mode="fake", semantics="cpu")
    assert fake.memory == real.memory
    assert fake.train_flops == real.train_flops > 0
    infer = dict(batch)
    assert account_inference(model, _loss, infer, mode="fake") == account_inference(model, _loss, infer, mode="real")


def test_all_ones_mask_is_dropped_as_transformers_drops_a_real_one():
    """SDPA skips an all-ones padding mask on real data; the fake step must take the same branch."""
    _, model = _model("full_ft", attn="sdpa")
    batch = _batch(pad=False)
    real = account_training_step(model, _loss, batch, _adamw, mode="real", semantics="cpu")
    fake = account_training_step(model, _loss, batch, _adamw, mode="fake", semantics="cpu")
    assert fake.memory == real.memory and fake.train_flops == real.train_flops


def _dropout_elements(cfg, b, src, tgt) -> int:
    """Elements passing through a training-mode dropout in one T5 forward, from the config's shapes."""
    d, ff, h = cfg["d_model"], cfg["d_ff"], cfg["num_heads"]
    enc = b * src * d + cfg["num_layers"] * (b * h * src * src + 2 * b * src * d + b * src * ff) + b * src * d
    dec = b * tgt * d + cfg["num_decoder_layers"] * (b * h * tgt * tgt + b * h * tgt * src + 3 * b * tgt * d + b * tgt * ff) + b * tgt * d
    return enc + dec


def test_dropout_costs_one_bool_per_element_under_cuda_semantics_and_one_float_on_cpu():
    _, model = _model("full_ft", dropout=0.1)
    batch = _batch()
    real = account_training_step(model, _loss, batch, _adamw, mode="real", semantics="cpu")
    cpu = account_training_step(model, _loss, batch, _adamw, mode="fake", semantics="cpu")
    cuda = account_training_step(model, _loss, batch, _adamw, mode="fake", semantics="cuda")
    assert cpu.memory == real.memory
    n = _dropout_elements(TINY_PRESETS["tiny-t5"], 4, 16, 4)
    assert cpu.memory.activations_bytes - cuda.memory.activations_bytes == n * (4 - 1)  # float32 noise vs bool mask
    assert cuda.train_flops == cpu.train_flops
    assert (cuda.memory.params_bytes, cuda.memory.grads_bytes, cuda.memory.optimizer_bytes) == (
        cpu.memory.params_bytes, cpu.memory.grads_bytes, cpu.memory.optimizer_bytes)


@pytest.mark.parametrize("mode", ["fake", "real"])
def test_accounting_never_moves_the_real_random_state(mode):
    _, model = _model("full_ft", dropout=0.1)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    account_training_step(model, _loss, _batch(), _adamw, mode=mode, semantics="cuda")
    assert torch.equal(torch.get_rng_state(), before)


class _Attention(nn.Module):
    def __init__(self, with_bias: bool):
        super().__init__()
        self.with_bias = with_bias

    def forward(self, q, k, v, bias):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias if self.with_bias else None).sum()


@pytest.mark.parametrize("with_bias", [False, True])
def test_sdpa_under_cuda_semantics_saves_inputs_output_and_logsumexp_by_hand(with_bias):
    """fp32 → memory-efficient kernel: q, k, v, out (+ the bias), logsumexp padded to 32 rows, two int64 RNG words."""
    b, h, lq, lk, d = 2, 3, 5, 7, 8
    g = torch.Generator().manual_seed(0)
    batch = {"q": torch.randn(b, h, lq, d, generator=g, requires_grad=True),
             "k": torch.randn(b, h, lk, d, generator=g, requires_grad=True),
             "v": torch.randn(b, h, lk, d, generator=g, requires_grad=True),
             "bias": torch.randn(b, h, lq, lk, generator=g)}
    cost = account_training_step(_Attention(with_bias), lambda m, x: m(**x), batch, _adamw, semantics="cuda")
    expected = 4 * (b * h * lq * d + 2 * b * h * lk * d + b * h * lq * d) + 4 * b * h * math.ceil(lq / 32) * 32 + 16
    if with_bias:
        expected += 4 * b * h * lq * lk
    assert cost.memory.activations_bytes == expected
    assert cost.train_flops == 3 * 2 * (2 * b * h * lq * lk * d)  # forward QKᵀ and PV, backward twice that


def test_fake_linear_layer_equals_the_hand_count():
    model = nn.Linear(4, 3)
    cost = account_training_step(model, lambda m, x: m(x["x"]).sum(), {"x": torch.randn(2, 4)}, _adamw)
    params = (4 * 3 + 3) * 4
    assert (cost.memory.params_bytes, cost.memory.grads_bytes) == (params, params)
    assert cost.memory.optimizer_bytes == 2 * params + 2 * 4      # exp_avg, exp_avg_sq, a fp32 step per tensor
    assert cost.memory.activations_bytes == 2 * 4 * 4             # addmm saves x
    assert cost.train_flops == 2 * (2 * 2 * 4 * 3)                # forward, grad of W (x needs none)


def test_unknown_mode_or_semantics_is_a_clear_error():
    with pytest.raises(ValueError, match="accounting_mode"):
        account_training_step(nn.Linear(2, 2), lambda m, x: m(x["x"]).sum(), {"x": torch.randn(1, 2)}, _adamw, mode="x")
    with pytest.raises(ValueError, match="accounting_semantics"):
        account_training_step(nn.Linear(2, 2), lambda m, x: m(x["x"]).sum(), {"x": torch.randn(1, 2)}, _adamw,
                              semantics="tpu")


def test_cuda_semantics_count_sdpa_flops_as_the_eager_matmuls():
    """The CPU's fused attention has no FLOP formula; under CUDA semantics SDPA costs what eager attention's
    two matmuls (and their four in backward) cost, for training and inference alike."""
    _, eager = _model("lora", attn="eager")
    _, sdpa = _model("lora", attn="sdpa")
    batch = _batch()
    e = account_training_step(eager, _loss, batch, _adamw, semantics="cpu")
    s = account_training_step(sdpa, _loss, batch, _adamw, semantics="cuda")
    assert s.train_flops == e.train_flops
    assert account_inference(sdpa, _loss, batch, semantics="cuda") == account_inference(eager, _loss, batch, semantics="cpu")
