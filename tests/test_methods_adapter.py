"""Houlsby adapters: near-identity at init, placed before T5's residual add, only adapters train."""

from __future__ import annotations

import torch
from energybench.methods.adapter import BottleneckAdapter, HoulsbyAdapter
from energybench.methods.base import ApplyContext, count_parameters

from energybench.models.backbones import load_backbone

D, ENC, DEC = 64, 2, 2  # the tiny-t5 preset
CTX = ApplyContext(total_steps=10, seed=0)



def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 200, (2, 12), generator=g)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(3, 200, (2, 4), generator=g))


def _apply(**settings):
    return HoulsbyAdapter(HoulsbyAdapter.Settings(**settings)).apply(load_backbone("tiny-t5").model, CTX)


def _backbone_logits():
    with torch.no_grad():
        return load_backbone("tiny-t5").model(**_inputs()).logits


def _relative_change(settings: dict) -> float:
    with torch.no_grad():
        after = _apply(**settings)(**_inputs()).logits
    before = _backbone_logits()
    return float((after - before).norm() / before.norm())


def test_houlsby_init_keeps_logits_within_one_percent_and_zero_up_init_is_exact():
    # std 1e-2 (Houlsby §3.6): each adapter adds ~ (0.01·√64)·(0.01·√64)/√2 ≈ 0.5% of its input;
    # ten adapters leave the logits within 1% (relative Frobenius norm), but not unchanged.
    change = _relative_change({})
    assert 0 < change < 1e-2
    assert _relative_change({"init_std": 0.1}) > 1e-2  # the tolerance does tell a near-identity init from another
    with torch.no_grad():
        exact = _apply(init="zero_up")(**_inputs()).logits
    assert torch.equal(exact, _backbone_logits())  # W_up = 0, b_up = 0: the adapter adds exactly +0.0


def test_only_adapter_parameters_train_with_hand_count():
    for m in (64, 32):  # READ's grid
        model = _apply(bottleneck=m)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert names and all(".adapter." in n for n in names)
        # 2 encoder layers × 2 adapters + 2 decoder layers × 3 adapters; down d×m + m, up m×d + d.
        assert count_parameters(model)[0] == (ENC * 2 + DEC * 3) * (D * m + m + m * D + D)
    assert count_parameters(_apply())[0] == 83_200


def test_adapters_sit_after_self_attention_cross_attention_and_ffn():
    model = _apply()
    names = [n for n, m in model.named_modules() if isinstance(m, BottleneckAdapter)]
    places = sorted(f"{n.split('.')[0]}.{n.split('.')[-2]}" for n in names)  # stack and sublayer
    assert places == sorted(["encoder.SelfAttention", "encoder.DenseReluDense"] * ENC
                            + ["decoder.SelfAttention", "decoder.EncDecAttention", "decoder.DenseReluDense"] * DEC)
    assert sum(isinstance(m, BottleneckAdapter) for m in _apply(after_cross_attention=False).modules()) == ENC * 2 + DEC * 2


def test_ffn_layer_output_is_h_plus_adapter_of_the_sublayer_output():
    """Houlsby's placement: the adapter maps the sublayer output before T5's residual add."""
    model = _apply(init_std=0.2)
    layer = model.encoder.block[0].layer[1]  # T5LayerFF: h + dropout(DenseReluDense(norm(h))), dropout 0 here
    ffn, adapter = layer.DenseReluDense, layer.DenseReluDense.adapter
    h = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = ffn.wo(torch.relu(ffn.wi(layer.layer_norm(h))))  # the sublayer, computed by hand
        z = torch.relu(y @ adapter.down.weight.T + adapter.down.bias)  # f(W_down·y), f = relu (default)
        expected = h + (y + z @ adapter.up.weight.T + adapter.up.bias)
        torch.testing.assert_close(layer(h), expected, rtol=1e-5, atol=1e-5)


def test_training_steps_change_adapters_and_leave_backbone_weights_bitwise_unchanged():
    model = _apply()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(3):
        model(**_inputs(step)).loss.backward()
        opt.step()
        opt.zero_grad()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert all(not torch.equal(params[n], v) for n, v in adapters.items())


def test_inference_keeps_the_adapters():
    method = HoulsbyAdapter()
    model = method.apply(load_backbone("tiny-t5").model, CTX)
    assert not HoulsbyAdapter.overrides("for_inference")
    assert method.for_inference(model) is model
    assert method.describe(model) == {"bottleneck": 64, "adapters": 10,
                                      "placement": ["DenseReluDense", "EncDecAttention", "SelfAttention"]}
