"""AdaLoRA and weight-decomposed DoRA (both peft) follow their papers' math on tiny-t5.

Hand counts for tiny-t5 (d_model 64, 4 heads × d_kv 16 = 64, 2 encoder + 2
decoder layers) with q, v targets: encoder self-attention q, v (2 × 2) and
decoder self- and cross-attention q, v (2 × 4) give 12 adapted 64×64 matrices.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from energybench.methods.adalora import AdaLoRA, check_schedule
from energybench.methods.base import ApplyContext, count_parameters
from energybench.methods.dora import DoRA
from pydantic import ValidationError

from energybench.models.backbones import load_backbone

D_IN = D_OUT = 64  # every q and v of tiny-t5 maps 64 → 4·16
N_MATRICES = 2 * 2 + 2 * 4
QV = ["q", "v"]  # these AdaLoRA tests adapt q and v (LoRA's targets); the default six are tested in test_methods_fidelity.py



def _inputs(seed: int = 0, batch: int = 2):
    """Random source, target with one padded (-100) position, as the loop's labels are."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 200, (batch, 12), generator=g)
    labels = torch.randint(3, 200, (batch, 5), generator=g)
    labels[0, -1] = -100
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)


def _copy_batch(step: int):
    """Toy seq2seq task: the target is the first four input tokens."""
    g = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(3, 60, (8, 12), generator=g)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids[:, :4].clone())


def _train(method, model, steps: int, total_steps: int, lr: float = 1e-2, after_hook=None):
    """The training loop's order: loss (+ regularizer), backward, step, on_step_end, zero_grad."""
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for step in range(1, steps + 1):
        loss = model(**_copy_batch(step)).loss
        reg = method.regularizer(model)
        if reg is not None:
            loss = loss + reg
        loss.backward()
        opt.step()
        method.on_step_end(model, step, total_steps)
        if after_hook is not None:
            after_hook(step)
        opt.zero_grad(set_to_none=True)


def _backbone_logits():
    backbone = load_backbone("tiny-t5").model.eval()
    with torch.no_grad():
        return backbone(**_inputs()).logits


def _orthogonality_penalty(model) -> torch.Tensor:
    """Mean over all A and B factors of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F (peft's unsquared form of the paper's Eq. 4)."""
    terms = []
    for name, p in model.named_parameters():
        if "lora_A" in name:
            terms.append(torch.linalg.norm(p @ p.T - torch.eye(p.shape[0]), ord="fro"))
        elif "lora_B" in name:
            terms.append(torch.linalg.norm(p.T @ p - torch.eye(p.shape[1]), ord="fro"))
    assert len(terms) == 2 * N_MATRICES
    return torch.stack(terms).mean()


def _live_ranks(model) -> list[int]:
    return [int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n]


# ---------------------------------------------------------------- AdaLoRA


def test_adalora_settings_reject_target_rank_not_below_init_rank_and_negative_values():
    with pytest.raises(ValidationError, match="target_r .* must be smaller than init_r"):
        AdaLoRA.Settings(init_r=8, target_r=8)
    with pytest.raises(ValidationError, match="target_r .* must be smaller than init_r"):
        AdaLoRA.Settings(init_r=4, target_r=6)
    for bad in (dict(tinit=-1), dict(tfinal=-1), dict(deltaT=0), dict(orth_reg_weight=-0.1), dict(beta1=1.0),
                dict(total_step=100)):  # total_step comes from the run, never from the user
        with pytest.raises(ValidationError):
            AdaLoRA.Settings(**bad)
    defaults = AdaLoRA.Settings()  # peft 0.21's defaults
    assert (defaults.init_r, defaults.target_r, defaults.tinit, defaults.tfinal, defaults.deltaT) == (12, 8, 0, 0, 1)
    assert (defaults.beta1, defaults.beta2, defaults.orth_reg_weight) == (0.85, 0.85, 0.5)


def test_check_schedule_reports_a_run_without_budgeting_phase_and_apply_refuses_it():
    settings = AdaLoRA.Settings(tinit=30, tfinal=20)
    message = check_schedule(settings, total_steps=50)  # 30 + 20 >= 50: budget never shrinks
    assert message is not None and "no budgeting phase" in message and "50" in message
    assert AdaLoRA.check_schedule(settings, 50) == message
    assert check_schedule(settings, total_steps=51) is None  # one budgeting step: step 31
    with pytest.raises(ValueError, match="no budgeting phase"):
        AdaLoRA(settings).apply(load_backbone("tiny-t5").model, ApplyContext(total_steps=50, seed=0))


def test_adalora_trains_A_E_B_of_q_and_v_with_hand_count_and_ranknum_frozen():
    backbone = load_backbone("tiny-t5").model
    _, backbone_total = count_parameters(backbone)
    model = AdaLoRA(AdaLoRA.Settings(target_modules=QV)).apply(backbone, ApplyContext(total_steps=100, seed=0))
    shapes = {n.split(".")[-2]: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    assert shapes == {"lora_A": (12, D_IN), "lora_E": (12, 1), "lora_B": (D_OUT, 12)}
    per_matrix = 12 * D_IN + 12 * 1 + D_OUT * 12  # A (r×in), E (r×1), B (out×r), r = init_r = 12
    trainable, total = count_parameters(model)
    assert trainable == N_MATRICES * per_matrix == 18_576
    assert total == backbone_total + trainable + N_MATRICES  # + one frozen ranknum per matrix


def test_adalora_loss_is_cross_entropy_plus_weighted_orthogonality_penalty():
    method = AdaLoRA(AdaLoRA.Settings(orth_reg_weight=0.3, target_modules=QV))
    model = method.apply(load_backbone("tiny-t5").model, ApplyContext(total_steps=100, seed=0))
    _train(method, model, steps=3, total_steps=100)  # E, A, B off their initial values
    model.eval()
    batch = _inputs()
    with torch.no_grad():
        out = model(**batch)
        ce = F.cross_entropy(out.logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        penalty = _orthogonality_penalty(model)
    assert penalty > 1.0  # A, B start near 0 (std 0.02), far from orthonormal: the term is not negligible
    torch.testing.assert_close(out.loss, ce + 0.3 * penalty, rtol=1e-6, atol=1e-6)


def test_adalora_model_is_the_backbone_at_init_because_E_starts_at_zero():
    model = AdaLoRA(AdaLoRA.Settings(target_modules=QV)).apply(load_backbone("tiny-t5").model,
                                                               ApplyContext(total_steps=100, seed=0)).eval()
    with torch.no_grad():
        logits = model(**_inputs()).logits
    torch.testing.assert_close(logits, _backbone_logits(), rtol=0, atol=0)


T, TINIT, TFINAL, INIT_R, TARGET_R = 40, 5, 10, 4, 2


def _paper_budget(t: int) -> int:
    """b(t) of the paper's Eq. 8 summed over the matrices (b0 = n·init_r, bT = n·target_r), floored as peft does."""
    b0, bT = N_MATRICES * INIT_R, N_MATRICES * TARGET_R
    if t <= TINIT:
        return b0
    if t > T - TFINAL:
        return bT
    return math.floor(bT + (b0 - bT) * (1 - (t - TINIT) / (T - TINIT - TFINAL)) ** 3)


@pytest.fixture(scope="module")
def adalora_run():
    """A 40-step run on the copy task: 5 warm-up steps, budgeting to step 30, 10 steps at the final allocation."""
    torch.set_num_threads(1)
    method = AdaLoRA(AdaLoRA.Settings(init_r=INIT_R, target_r=TARGET_R, tinit=TINIT, tfinal=TFINAL, target_modules=QV))
    model = method.apply(load_backbone("tiny-t5").model, ApplyContext(total_steps=T, seed=0))
    calls, live = [], {}
    allocate = model.base_model.update_and_allocate

    def counting(step):
        calls.append(step)
        return allocate(step)

    model.base_model.update_and_allocate = counting
    _train(method, model, steps=T, total_steps=T, after_hook=lambda step: live.update({step: sum(_live_ranks(model))}))
    return method, model, calls, live


def test_adalora_update_and_allocate_runs_after_every_step_and_live_rank_follows_the_cubic_budget(adalora_run):
    _, _, calls, live = adalora_run
    assert calls == list(range(1, T + 1))
    # Warm-up: no masking, every triplet live (AdamW moved every E off its initial 0).
    assert all(live[t] == N_MATRICES * INIT_R for t in range(1, TINIT + 1))
    # Budgeting and final phase: exactly b(t) triplets survive each allocation (deltaT = 1).
    assert {t: live[t] for t in range(TINIT + 1, T + 1)} == {t: _paper_budget(t) for t in range(TINIT + 1, T + 1)}
    assert len({live[t] for t in range(TINIT, T - TFINAL + 1)}) > 5  # the budget moved step by step


def test_adalora_run_ends_with_target_rank_times_matrices_and_describe_reports_it(adalora_run):
    method, model, _, _ = adalora_run
    facts = method.describe(model)
    assert facts["total_rank"] == sum(_live_ranks(model)) == TARGET_R * N_MATRICES
    assert len(facts["rank_pattern"]) == N_MATRICES
    assert all(0 <= r <= INIT_R for r in facts["rank_pattern"].values())
    assert "encoder.block.0.layer.0.SelfAttention.q" in facts["rank_pattern"]
    assert facts["init_total_rank"] == INIT_R * N_MATRICES and facts["target_total_rank"] == TARGET_R * N_MATRICES
    assert facts["allocation_final"] is True
    peft_mask = model.peft_config["default"].rank_pattern
    assert sum(sum(mask) for mask in peft_mask.values()) == TARGET_R * N_MATRICES


def test_adalora_merged_model_gives_the_unmerged_logits(adalora_run):
    method, model, _, _ = adalora_run
    model.eval()
    with torch.no_grad():
        unmerged = model(**_inputs()).logits
    merged = method.for_inference(model)
    assert type(merged).__name__ == "T5ForConditionalGeneration"
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**_inputs()).logits, unmerged, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- DoRA


def test_dora_model_is_the_backbone_at_init():
    model = DoRA().apply(load_backbone("tiny-t5").model, ApplyContext(total_steps=10, seed=0)).eval()
    with torch.no_grad():
        logits = model(**_inputs()).logits
    # B = 0 and m = ‖W0‖ make the scale m/‖W0‖ exactly 1; logits are of order 10, so 1e-6 is a tight bound.
    torch.testing.assert_close(logits, _backbone_logits(), rtol=0, atol=1e-6)


def test_dora_magnitude_starts_at_the_per_output_unit_norm_of_the_frozen_weight():
    backbone = load_backbone("tiny-t5").model
    w0 = {n.removesuffix(".weight"): p.detach().clone() for n, p in backbone.named_parameters()
          if n.endswith((".q.weight", ".v.weight"))}
    model = DoRA().apply(backbone, ApplyContext(total_steps=10, seed=0))
    magnitudes = {n.removeprefix("base_model.model.").split(".lora_magnitude_vector")[0]: p
                  for n, p in model.named_parameters() if "lora_magnitude_vector" in n}
    assert magnitudes.keys() == w0.keys() and len(w0) == N_MATRICES
    for name, m in magnitudes.items():
        # torch stores W0 as out×in; the paper's column norm ‖W0‖_c is one norm per output unit: over dim 1 here.
        torch.testing.assert_close(m.detach(), torch.linalg.norm(w0[name], dim=1), rtol=1e-6, atol=0)


def test_dora_trains_A_B_and_magnitude_with_hand_count():
    backbone = load_backbone("tiny-t5").model
    _, backbone_total = count_parameters(backbone)
    model = DoRA().apply(backbone, ApplyContext(total_steps=10, seed=0))
    per_matrix = 8 * D_IN + D_OUT * 8 + D_OUT  # A (r×in), B (out×r), m (out), r = 8
    trainable, total = count_parameters(model)
    assert trainable == N_MATRICES * per_matrix == 13_056
    assert total == backbone_total + trainable


def test_dora_merged_weight_is_magnitude_times_normalised_direction_and_keeps_logits():
    method = DoRA()
    model = method.apply(load_backbone("tiny-t5").model, ApplyContext(total_steps=10, seed=0))
    _train(method, model, steps=5, total_steps=10)
    model.eval()
    layer = model.base_model.model.encoder.block[0].layer[0].SelfAttention.q
    w0 = layer.base_layer.weight.detach().clone()
    a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    m = layer.lora_magnitude_vector["default"].weight.detach()
    assert b.abs().max() > 0 and not torch.allclose(m, torch.linalg.norm(w0, dim=1))  # training moved B and m
    direction = w0 + (8.0 / 8) * b @ a  # V = W0 + (alpha/r)·B·A
    expected = m[:, None] * direction / torch.linalg.norm(direction, dim=1, keepdim=True)
    with torch.no_grad():
        unmerged = model(**_inputs()).logits
    assert (unmerged - _backbone_logits()).abs().max() > 1e-3  # so the equality below can fail
    merged = method.for_inference(model)
    assert type(merged).__name__ == "T5ForConditionalGeneration"
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged.encoder.block[0].layer[0].SelfAttention.q.weight, expected,
                               rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        # fp32 rounding: logits here reach ~25, so allow 1e-5 absolute plus 1e-5 relative.
        torch.testing.assert_close(merged(**_inputs()).logits, unmerged, rtol=1e-5, atol=1e-5)


def test_dora_settings_reject_nonpositive_rank_alpha_and_unknown_keys():
    for bad in (dict(r=0), dict(alpha=0), dict(dropout=1.0), dict(target_modules=[]), dict(use_dora=False)):
        with pytest.raises(ValidationError):
            DoRA.Settings(**bad)
