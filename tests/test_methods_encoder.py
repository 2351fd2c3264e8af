"""Every method on the encoder family (tiny-bert): it trains exactly what it should, the head included.

Hand counts for tiny-bert: D = 64, FF = 128, 2 layers, 4 heads, 2 labels,
ByT5 vocabulary 384, 512 positions, 2 token types; the classification head
(``classifier``) is D·2 + 2 = 130 parameters.
"""

from __future__ import annotations

import math

import pytest
import torch

from energybench.methods.base import ApplyContext, count_parameters
from energybench.models.backbones import load_backbone
from energybench.registry import load_method

D, FF, L, LABELS = 64, 128, 2, 2
HEAD = D * LABELS + LABELS
CTX = ApplyContext(total_steps=100, seed=0)


def _bert(num_labels: int = LABELS):
    return load_backbone("tiny-bert", seed=0, num_labels=num_labels).model


def _inputs(labels=True):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0
    batch = dict(input_ids=ids, attention_mask=mask)
    if labels:
        batch["labels"] = torch.tensor([0, 1, 1])
    return batch


def _apply(name: str, **settings):
    cls = load_method(name)
    return cls(cls.Settings(**settings)).apply(_bert(), CTX)


def _trainable(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _lowrank(r, i, o, extra=0):
    return r * i + o * r + extra


SIX = [(D, D)] * 4 + [(D, FF), (FF, D)]  # (in, out) of Wq, Wk, Wv, Wo, Wf1, Wf2
EXPECTED = {
    # every bias: per layer q,k,v,o (4D) + intermediate (FF) + output (D) + 2 LayerNorms (2D);
    # embedding LayerNorm (D), pooler (D); and the head
    "bitfit": L * (7 * D + FF) + D + D + HEAD,
    "lora": L * 2 * _lowrank(8, D, D) + HEAD,                       # peft's BERT default: query, value
    "dora": L * 2 * (_lowrank(8, D, D) + D) + HEAD,                 # + the magnitude vector m
    "adalora": L * sum(_lowrank(12, i, o, 12) for i, o in SIX) + HEAD,   # A, B, E on all six, init_r 12
    "dydora": L * sum(_lowrank(12, i, o, 12) for i, o in SIX) + HEAD,    # A, B, c; r' = ceil(1.5·8)
    "adapter": 2 * L * (2 * (D * 64 + 64)) + HEAD,                  # down + up, bottleneck 64, 2 per layer
    "read": (4 * 16 * (D + 16) + 2 * 4 * 16) + 16 * D + HEAD,       # LSTMCell(D, 16) + W_out
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_method_trains_its_hand_counted_parameters_head_included(name):
    model = _apply(name, **({"rnn_dim": 16} if name == "read" else {}))
    trainable, _ = count_parameters(model)
    assert trainable == EXPECTED[name]
    names = _trainable(model)
    assert any("classifier" in n and n.endswith("weight") for n in names), "the new head must train"


def test_full_ft_trains_everything_and_bitfit_only_biases_and_head():
    full = _apply("full_ft")
    assert count_parameters(full)[0] == count_parameters(full)[1]
    names = _trainable(_apply("bitfit"))
    assert all(n.endswith("bias") or n.startswith("classifier.") for n in names)


def test_lst_trains_the_side_encoder_ladders_up_projection_and_head():
    model = _apply("lst", init="random")
    d = D // 8
    embeddings = 512 * d + 2 * d + 2 * d               # position, type, LayerNorm (word table frozen)
    layer = 4 * (d * d + d) + 2 * d + (d * 2 * d + 2 * d) + (2 * d * d + d) + 2 * d
    ladder = D * d + d
    expected = embeddings + L * (layer + ladder) + ladder + L + (d * D + D) + HEAD
    assert count_parameters(model)[0] == expected
    assert not any(p.requires_grad for p in model.backbone.bert.parameters())


def test_lst_refuses_pruned_init_on_encoders():
    with pytest.raises(ValueError, match="pruned"):
        _apply("lst", init="pruned")


def test_adalora_and_dydora_adapt_all_six_matrix_types_of_every_layer():
    ada = _apply("adalora")
    adapted = {n.split(".lora_E")[0] for n, _ in ada.named_parameters() if ".lora_E" in n}
    suffixes = {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                "intermediate.dense", "output.dense"}
    for i in range(L):
        assert {s for s in suffixes if any(a.endswith(f"layer.{i}.{s}") for a in adapted)} == suffixes
    assert len(adapted) == 6 * L
    dy = _apply("dydora")
    assert sum(1 for n, _ in dy.named_parameters() if n.endswith("dydora_c")) == 6 * L


def test_lora_default_targets_are_peft_mapping_for_the_architecture():
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as mapping

    model = _apply("lora")
    adapted = {n.split(".")[-4] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted == set(mapping["bert"])


def _perturb_low_rank(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if any(k in n for k in ("lora_B", "lora_E", "dydora_c", "classifier")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name", ["lora", "dora", "adalora", "dydora"])
def test_merged_output_equals_unmerged(name):
    cls = load_method(name)
    method = cls(cls.Settings())
    model = method.apply(_bert(), CTX)
    _perturb_low_rank(model)
    model.eval()
    with torch.no_grad():
        before = model(**_inputs(labels=False)).logits
        merged = method.for_inference(model)
        after = merged(**_inputs(labels=False)).logits
    assert not any("lora" in n or "dydora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()


@pytest.mark.parametrize("name", ["read", "lst"])
def test_side_networks_leave_the_backbone_without_gradients(name):
    settings = {"rnn_dim": 16} if name == "read" else {"init": "random"}
    model = _apply(name, **settings)
    model(**_inputs()).loss.backward()
    backbone = model.backbone
    assert all(p.grad is None for p in backbone.bert.parameters())
    assert backbone.classifier.weight.grad is not None and backbone.classifier.weight.grad.abs().sum() > 0
    side = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    assert side and any(p.grad is not None and p.grad.abs().sum() > 0 for p in side)


def test_read_starts_as_the_backbone_and_its_backbone_pass_builds_no_graph():
    from energybench.models import encoder

    bert = _bert().eval()
    with torch.no_grad():
        want = bert(**_inputs(labels=False)).logits
    model = load_method("read")(load_method("read").Settings(rnn_dim=16)).apply(bert, CTX).eval()
    got = model(**_inputs(labels=False)).logits
    assert torch.allclose(want, got, atol=1e-6)
    states = encoder.layer_states(bert, **_inputs(labels=False))
    assert len(states) == L + 1 and not any(s.requires_grad for s in states)


def test_adapters_sit_on_the_attention_output_and_ffn_output_projections():
    model = _apply("adapter")
    hosts = sorted(n.rsplit(".adapter", 1)[0].split("encoder.")[1] for n, m in model.named_modules()
                   if n.endswith(".adapter"))
    assert hosts == sorted(f"layer.{i}.{p}" for i in range(L) for p in ("attention.output.dense", "output.dense"))


def test_regression_head_has_one_output_and_mse_loss():
    bert = _bert(num_labels=1)
    assert bert.config.num_labels == 1 and bert.config.problem_type == "regression"
    batch = _inputs(labels=False)
    target = torch.tensor([0.5, 3.0, 4.2])
    out = bert(**batch, labels=target)
    assert out.logits.shape == (3, 1)
    assert math.isclose(float(out.loss), float(((out.logits[:, 0] - target) ** 2).mean()), rel_tol=1e-5)
