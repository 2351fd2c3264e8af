"""The meta-device engine of fake accounting: what a real CPU step counts under the same CUDA semantics.

Under CUDA semantics without autocast, ``accounting_mode: fake`` runs the
step on meta tensors (with remembered shape answers, measure/meta_shapes.py). Every
expected number here is a real CPU computation routed through the same CUDA
kernel model (``mode="real", semantics="cuda"``), with dropout on and the
default (SDPA) attention, for every registered method on each family's tiny
preset.
"""

from __future__ import annotations

import pytest
import torch

from energybench.measure.accounting import account_inference, account_training_step
from energybench.methods.base import ApplyContext
from energybench.models.backbones import load_backbone
from energybench.registry import load_method, method_names


def _adamw(params):
    return torch.optim.AdamW(params, lr=1e-3)


def _padded(ids: torch.Tensor) -> torch.Tensor:
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    return mask


def _batch(family: str) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (3, 12), generator=g)
    if family == "seq2seq":
        return dict(input_ids=ids, attention_mask=_padded(ids), labels=torch.randint(3, 200, (3, 4), generator=g))
    if family == "encoder":
        return dict(input_ids=ids, attention_mask=_padded(ids), labels=torch.tensor([0, 1, 1]))
    labels = ids.clone()
    labels[:, :8] = -100
    return dict(input_ids=ids, attention_mask=_padded(ids), labels=labels)


PRESETS = {"seq2seq": ("tiny-t5", {"dropout_rate": 0.1}), "encoder": ("tiny-bert", {"hidden_dropout_prob": 0.1}),
           "causal": ("tiny-llama", {"attention_dropout": 0.1})}


def _method_and_model(name: str, family: str):
    preset, overrides = PRESETS[family]
    cls = load_method(name)
    method = cls()
    bb = load_backbone(preset, seed=0, num_labels=2, config_overrides=overrides)
    return method, method.apply(bb.model, ApplyContext(total_steps=10, seed=0))


def _loss(method):
    has_reg = method.overrides("regularizer")

    def loss(model, batch):
        out = model(**batch).loss
        return out + method.regularizer(model) if has_reg else out

    return loss


@pytest.mark.parametrize("family", sorted(PRESETS))
@pytest.mark.parametrize("name", method_names())
def test_meta_engine_counts_what_a_real_step_counts_under_cuda_semantics(name, family):
    method, model = _method_and_model(name, family)
    batch = _batch(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real = account_training_step(model, _loss(method), batch, _adamw, mode="real", semantics="cuda")
    meta = account_training_step(model, _loss(method), batch, _adamw, mode="fake", semantics="cuda")
    assert meta.engine == "meta"
    assert meta.memory == real.memory
    assert meta.train_flops == real.train_flops > 0
    assert account_inference(model, lambda m, b: m(**b), batch, mode="fake", semantics="cuda") == \
        account_inference(model, lambda m, b: m(**b), batch, mode="real", semantics="cuda")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "accounting changed the caller's model"
    assert all(p.grad is None for p in model.parameters())


def test_autocast_and_cpu_semantics_use_fake_cpu_tensors():
    """Autocast has no meta dispatch key and CPU semantics follow the CPU's kernel choices: both need fake
    CPU tensors, and still count what the real step counts."""
    method, model = _method_and_model("lora", "seq2seq")
    batch = _batch("seq2seq")
    for kwargs in ({"semantics": "cpu"}, {"semantics": "cuda", "autocast_dtype": torch.bfloat16}):
        fake = account_training_step(model, _loss(method), batch, _adamw, mode="fake", **kwargs)
        real = account_training_step(model, _loss(method), batch, _adamw, mode="real", **kwargs)
        assert fake.engine == "fake-tensor"
        assert (fake.memory, fake.train_flops) == (real.memory, real.train_flops)


def test_an_operator_meta_tensors_refuse_falls_back_to_fake_tensors():
    """A CPU constant mixed into the step is an error on meta tensors; fake tensors accept it."""
    lin = torch.nn.Linear(4, 3)
    offset = torch.arange(3.0)  # a real CPU tensor outside the model, as some custom code holds

    def loss(model, batch):
        return (model(batch["x"]) + offset).sum()

    batch = {"x": torch.ones(2, 4)}
    cost = account_training_step(lin, loss, batch, _adamw, mode="fake", semantics="cuda")
    real = account_training_step(lin, loss, batch, _adamw, mode="real", semantics="cuda")
    assert cost.engine == "fake-tensor"
    assert (cost.memory, cost.train_flops) == (real.memory, real.train_flops)
    # by hand: W 3×4 + b 3 fp32 = 60 bytes each for parameters and gradients, AdamW 2×60 + 2 step scalars
    assert (real.memory.params_bytes, real.memory.grads_bytes, real.memory.optimizer_bytes) == (60, 60, 128)


def test_a_meta_twin_keeps_each_storage_shared_and_each_layout_and_flag():
    from energybench.measure.fake import meta_copy, storage_key

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 4))
    model[1].weight = torch.nn.Parameter(model[0].weight.detach().t())  # a transposed view of layer 0's storage
    model[0].bias.requires_grad_(False)
    model.register_buffer("window", torch.arange(10.0)[2:7])  # a slice: offset 2 into 40 bytes
    twin = meta_copy(model)
    layouts = [(tuple(t.shape), t.stride(), t.storage_offset(), t.untyped_storage().nbytes(), t.is_meta)
               for t in (*twin.parameters(), *twin.buffers())]
    assert layouts == [((3, 4), (4, 1), 0, 48, True), ((3,), (1,), 0, 12, True), ((4, 3), (1, 4), 0, 48, True),
                       ((4,), (1,), 0, 16, True), ((5,), (1,), 2, 40, True)]
    assert storage_key(twin[0].weight) == storage_key(twin[1].weight) != storage_key(twin[1].bias)
    assert [p.requires_grad for p in twin.parameters()] == [True, False, True, True]
    assert not model[0].weight.is_meta  # the original is untouched
