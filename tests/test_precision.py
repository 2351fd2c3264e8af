"""precision / gradient_checkpointing: the loop's hooks, the dtypes each method trains in, the accounting following."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from energybench.measure.accounting import account_training_step
from energybench.methods.base import ApplyContext
from energybench.models.backbones import load_backbone
from energybench.registry import load_method
from energybench.train.precision import Precision, autocast_dtype, prepare_backbone
from energybench.train.settings import TrainingSettings


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (4, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 10:] = 0
    return dict(input_ids=ids, attention_mask=mask, labels=torch.randint(3, 200, (4, 4), generator=g))


def _model(method: str, precision: str, gc: bool):
    bb = load_backbone("tiny-t5", seed=0, config_overrides={"attn_implementation": "eager"}).model
    prepare_backbone(bb, precision, gc)
    return load_method(method)().apply(bb, ApplyContext(total_steps=10, seed=0))


def _account(model, precision, mode):
    return account_training_step(model, lambda m, b: m(**b).loss, _batch(), lambda p: torch.optim.AdamW(p),
                                 mode=mode, semantics="cpu", autocast_dtype=autocast_dtype(precision))


@pytest.mark.parametrize("method", ["full_ft", "lora"])
@pytest.mark.parametrize("precision,gc", [("bf16-mixed", False), ("bf16", False), ("fp32", True), ("fp16-mixed", True)])
def test_fake_accounting_follows_precision_and_checkpointing_as_the_real_step_does(method, precision, gc):
    model = _model(method, precision, gc)
    real, fake = _account(model, precision, "real"), _account(model, precision, "fake")
    assert fake.memory == real.memory and fake.train_flops == real.train_flops


def test_bf16_halves_the_backbone_and_leaves_peft_adapters_in_float32():
    full32, full16 = _model("full_ft", "fp32", False), _model("full_ft", "bf16", False)
    n = sum(p.numel() for p in full32.parameters())
    assert _account(full32, "fp32", "fake").memory.params_bytes == 4 * n
    assert _account(full16, "bf16", "fake").memory.params_bytes == 2 * n
    assert _account(full16, "bf16", "fake").memory.grads_bytes == 2 * n
    lora = _model("lora", "bf16", False)
    trained = [p for p in lora.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert all(p.dtype == torch.bfloat16 for p in lora.parameters() if not p.requires_grad)
    assert _account(lora, "bf16", "fake").memory.grads_bytes == 4 * sum(p.numel() for p in trained)


def test_checkpointing_saves_less_than_keeping_every_activation():
    plain, ckpt = _model("full_ft", "fp32", False), _model("full_ft", "fp32", True)
    a, b = _account(plain, "fp32", "fake"), _account(ckpt, "fp32", "fake")
    assert b.memory.activations_bytes < a.memory.activations_bytes / 2
    assert b.memory.params_bytes == a.memory.params_bytes


@pytest.mark.parametrize("precision", ["bf16-mixed", "fp16-mixed", "bf16"])
def test_one_loop_step_trains_in_each_precision(precision):
    model = _model("lora", precision, precision == "bf16")
    trained = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trained]
    opt = torch.optim.AdamW(trained, lr=1e-2)
    prec = Precision(precision, torch.device("cpu"))
    assert (prec.scaler is not None) == (precision == "fp16-mixed")
    model.train()
    for _ in range(4):  # fp16's GradScaler skips the first steps while its scale (2**16) overflows
        with prec.autocast():
            loss = model(**_batch()).loss
        prec.backward(loss)
        prec.unscale(opt)
        prec.step(opt)
        opt.zero_grad()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, trained))


def test_precision_is_validated_and_hashed_with_the_training_settings():
    with pytest.raises(ValidationError, match="precision"):
        TrainingSettings(precision="fp8")
    a = TrainingSettings().model_dump()
    b = TrainingSettings(precision="bf16", gradient_checkpointing=True).model_dump()
    assert a["precision"] == "fp32" and a["gradient_checkpointing"] is False and a != b


def test_fp16_mixed_counts_the_loss_scalers_state_the_loop_keeps():
    """A float32 scale and an int32 growth tracker: 4 + 4 bytes, what the loop's own scaler holds after a step."""
    from energybench.train.precision import loss_scaler_state_bytes

    assert [loss_scaler_state_bytes(p) for p in ("fp32", "bf16-mixed", "bf16")] == [0, 0, 0]
    assert loss_scaler_state_bytes("fp16-mixed") == 4 + 4
    model = _model("lora", "fp16-mixed", False)
    prec = Precision("fp16-mixed", torch.device("cpu"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    with prec.autocast():
        loss = model(**_batch()).loss
    prec.backward(loss)
    prec.step(opt)
    kept = [v for v in vars(prec.scaler).values() if torch.is_tensor(v)]
    assert sum(v.nbytes for v in kept) == 8


def test_estimate_adds_the_scaler_to_the_optimizer_state_and_nothing_else(tmp_path):
    from conftest import write_suite

    from energybench.run.estimate import estimate_suite
    from energybench.suite import load_suite

    def row(precision):
        path = write_suite(tmp_path, f"""
name: scaler
output_dir: runs/scaler
backbones:
  - name: tiny-t5
tasks:
  - name: synth-sst2
methods:
  - name: lora
training:
  batch_size: 2
  max_source_length: 12
  max_target_length: 3
  precision: {precision}
""", name=f"{precision}.yaml")
        return estimate_suite(load_suite(path), progress=lambda _m: None, jobs=1)[0]

    fp16, bf16 = row("fp16-mixed"), row("bf16-mixed")  # float16 and bfloat16 activations: 2 bytes each alike
    assert fp16["mem_optimizer_bytes"] == bf16["mem_optimizer_bytes"] + 8
    assert fp16["mem_model_bytes"] == bf16["mem_model_bytes"] + 8
    for key in ("mem_params_bytes", "mem_grads_bytes", "mem_activations_bytes", "train_flops"):
        assert fp16[key] == bf16[key], key
