"""Dynamic-rank DoRA follows the paper's math: identity at init, cubic budget, global soft pruning, DEM, merge."""

from __future__ import annotations

import math

import pytest
import torch
from energybench.methods.base import ApplyContext, count_parameters
from energybench.methods.dydora import (
    DyDoRA,
    DyDoRALinear,
    budget_schedule,
    dydora_layers,
    prune_schedule,
)
from torch import nn

from energybench.models.backbones import load_backbone

D, FF, ENC, DEC = 64, 128, 2, 2  # the tiny-t5 preset
INIT_R, R = 12, 8  # defaults: r = 8, r' = ceil(1.5·8)
N_MATRICES = ENC * 6 + DEC * 10  # encoder q,k,v,o,wi,wo; decoder adds cross-attention q,k,v,o



def _inputs(seed: int = 0, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 200, (batch, 12), generator=g)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(3, 200, (batch, 4), generator=g))


def _copy_batch(step: int):
    """Toy task: the target is the first four input tokens."""
    g = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(3, 60, (8, 12), generator=g)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids[:, :4].clone())


def _apply(total_steps: int, **settings):
    method = DyDoRA(DyDoRA.Settings(**settings))
    model = method.apply(load_backbone("tiny-t5").model, ApplyContext(total_steps=total_steps, seed=0))
    return method, model


def _train(method, model, steps: int, total_steps: int, lr: float = 1e-2, after_step=None):
    """The training loop's order: loss + regularizer, backward, step, on_step_end, zero_grad."""
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
        if after_step is not None:
            after_step("after_optimizer", step)
        method.on_step_end(model, step, total_steps)
        if after_step is not None:
            after_step("after_hook", step)
        opt.zero_grad(set_to_none=True)


def test_dydora_model_is_exactly_the_backbone_at_init_even_with_dropout():
    backbone = load_backbone("tiny-t5").model
    backbone.train()
    with torch.no_grad():
        before = backbone(**_inputs()).logits
    _, model = _apply(60)  # default dropout 0.1 on the low-rank path, train mode
    model.train()
    with torch.no_grad():
        after = model(**_inputs()).logits
    # c = 0: the low-rank path adds exactly +0.0, so the logits are bitwise equal (tolerance 0).
    assert torch.equal(after, before)


def test_trainable_parameters_are_A_B_c_of_q_k_v_o_wi_wo_with_hand_count():
    _, model = _apply(60)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.rsplit(".", 1)[-1] in ("dydora_A", "dydora_B", "dydora_c") for n in names)
    assert len(dydora_layers(model)) == N_MATRICES == 32
    # A matrix in→out gets r' components of in + out + 1 numbers (Aᵢ, Bᵢ, cᵢ).
    per = lambda fan_in, fan_out: INIT_R * (fan_in + fan_out + 1)  # noqa: E731
    enc_layer = 4 * per(D, D) + per(D, FF) + per(FF, D)
    dec_layer = 8 * per(D, D) + per(D, FF) + per(FF, D)
    assert count_parameters(model)[0] == ENC * enc_layer + DEC * dec_layer == 55_680


def test_init_r_defaults_to_ceil_of_one_and_a_half_r():
    assert DyDoRA.Settings().initial_rank == 12
    assert DyDoRA.Settings(r=5).initial_rank == 8  # ceil(7.5)
    assert DyDoRA.Settings(r=2, init_r=6).initial_rank == 6
    with pytest.raises(ValueError):
        DyDoRA.Settings(r=8, init_r=4)


def test_budget_schedule_is_the_papers_cubic_between_t_i_and_t_f():
    T, t_i, t_f = 1000, 150, 500
    b = lambda t: budget_schedule(t, T, INIT_R, R, t_i, t_f)  # noqa: E731
    assert b(0) == 12.0 and b(t_i - 1) == 12.0 and b(t_i) == 12.0
    assert b(325) == pytest.approx(12 - 4 * 0.5 ** 3) == pytest.approx(11.5)  # midpoint of (t_i, t_f)
    assert b(400) == pytest.approx(12 - 4 * 125 / 343)  # (250/350)³ = (5/7)³
    assert b(t_f) == 8.0 and b(t_f + 1) == 8.0 and b(T) == 8.0
    with pytest.raises(ValueError):
        budget_schedule(10, T, INIT_R, R, t_f, t_i)  # t_i after t_f


def test_prune_schedule_uses_authors_fractions_and_shrinks_interval_on_short_runs():
    assert prune_schedule(10_000) == (1500, 5000, 100)  # the authors' every-100-steps on a long run
    assert prune_schedule(1000) == (150, 500, 35)  # (500 − 150) // 10
    assert prune_schedule(60) == (9, 30, 2)
    assert prune_schedule(1) == (0, 1, 1)  # even one step reaches the final budget


def _dense_importance(layer: DyDoRALinear) -> torch.Tensor:
    """sᵢ from explicit out×in matrices ΔWᵢ = cᵢ·Bᵢ·Aᵢ (paper §3.2)."""
    a, b, c = layer.dydora_A.detach().double(), layer.dydora_B.detach().double(), layer.dydora_c.detach().double()
    parts = [c[i] * torch.outer(b[:, i], a[i]) for i in range(len(c))]
    total = torch.linalg.matrix_norm(sum(parts))
    return torch.stack([torch.linalg.matrix_norm(p) for p in parts]) / total


def test_importance_is_component_norm_over_update_norm_and_zero_for_a_zero_gate():
    torch.manual_seed(0)
    layer = DyDoRALinear(nn.Linear(5, 7, bias=False), init_r=4, alpha=8.0, dropout=0.0)
    with torch.no_grad():
        layer.dydora_c.copy_(torch.tensor([0.5, 0.0, -2.0, 1.0]))
    s = layer.raw_importance()
    torch.testing.assert_close(s.double(), _dense_importance(layer), rtol=1e-5, atol=1e-7)
    assert s[1] == 0
    with torch.no_grad():
        layer.dydora_c.zero_()  # the whole update is 0: no division by zero, every score 0
    assert torch.equal(layer.raw_importance(), torch.zeros(4))


def test_prune_event_zeroes_globally_least_important_gates_and_keeps_their_A_B():
    T = 60
    t_i, t_f, _ = prune_schedule(T)
    method, model = _apply(T)
    layers = list(dydora_layers(model).values())
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in layers:  # stand-in for trained gates
            layer.dydora_c.normal_()
    before = {id(l): (l.dydora_A.clone(), l.dydora_B.clone(), l.dydora_c.clone(), l.raw_importance()) for l in layers}
    method.on_step_end(model, t_f, T)  # the last prune event: budget r
    pruned_scores, kept_scores, live = [], [], []
    for layer in layers:
        a, b, c, s = before[id(layer)]
        assert torch.equal(layer.dydora_A, a) and torch.equal(layer.dydora_B, b)  # soft: A, B untouched
        gone = layer.dydora_c == 0
        assert torch.equal(layer.dydora_c[~gone], c[~gone])
        pruned_scores.append(s[gone])
        kept_scores.append(s[~gone])
        live.append(int((~gone).sum()))
    assert sum(live) == R * N_MATRICES
    # One global threshold: every pruned component ranks below every kept one (EMA from 0 = (1−β)·s, same order).
    assert torch.cat(pruned_scores).max() <= torch.cat(kept_scores).min()
    assert len(set(live)) > 1  # the allocation differs between matrices: pruning is not per matrix


def test_sixty_step_run_ends_with_r_live_components_per_matrix_and_pruned_gates_recover_mid_run():
    T = 60
    t_i, t_f, interval = prune_schedule(T)
    method, model = _apply(T)
    layers = list(dydora_layers(model).values())
    n_pruned_after_hook: dict[int, int] = {}
    recovered = []

    def watch(phase: str, step: int):
        pruned = torch.cat([l.pruned for l in layers])
        gates = torch.cat([l.dydora_c.detach() for l in layers])
        if phase == "after_hook":
            n_pruned_after_hook[step] = int(pruned.sum())
            if step > t_f:  # distribution fixed: the pruned stay at 0
                assert torch.all(gates[pruned] == 0)
        elif t_i < step <= t_f:  # after the optimizer moved the gates, before any re-pruning
            recovered.append(int((gates[pruned] != 0).sum()))

    _train(method, model, T, T, after_step=watch)
    info = method.describe(model)
    assert info["total_live"] == R * N_MATRICES == 256
    assert sum(int((l.dydora_c != 0).sum()) for l in layers) == 256  # counted from the gates themselves
    assert info["init_r"] == 12 and info["target_r"] == 8 and info["pruning_finished"]
    # At events, the number pruned is ⌊n·(r' − b(t))⌋ with the paper's b(t).
    for t in (t_i + interval * 5, t_f):
        b = INIT_R - (INIT_R - R) * ((t - t_i) / (t_f - t_i)) ** 3
        assert n_pruned_after_hook[t] == math.floor(N_MATRICES * (INIT_R - b) + 1e-6)
    assert n_pruned_after_hook[t_f] == N_MATRICES * (INIT_R - R) == 128
    assert max(recovered) > 0  # soft pruning: backprop moved some pruned gates off 0 before the next event


def test_merged_model_gives_the_unmerged_logits_after_training():
    method, model = _apply(60)
    _train(method, model, 5, 60, lr=3e-2)
    model.eval()
    with torch.no_grad():
        unmerged = model(**_inputs()).logits
        backbone = load_backbone("tiny-t5").model(**_inputs()).logits
    assert (unmerged - backbone).abs().max() > 1e-3  # training changed the model, so the check below can fail
    merged = method.for_inference(model)
    assert not dydora_layers(merged) and not any("dydora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**_inputs()).logits, unmerged, rtol=1e-5, atol=1e-5)


def _variances(layers):
    """Unbiased variance of every Aᵢ (row of A) and Bᵢ (column of B), written out."""
    out = []
    for layer in layers:
        for vec in list(layer.dydora_A.detach()) + list(layer.dydora_B.detach().T):
            out.append(float(((vec - vec.mean()) ** 2).sum() / (vec.numel() - 1)))
    return torch.tensor(out)


def test_dem_is_eta_times_mean_component_variance_and_one_step_on_it_lowers_every_variance():
    method, model = _apply(60, dem_weight=0.1)
    layers = list(dydora_layers(model).values())
    var_before = _variances(layers)
    n_components = INIT_R * N_MATRICES
    reg = method.regularizer(model)
    assert float(reg.detach()) == pytest.approx(0.1 * float(var_before.sum()) / n_components, rel=1e-5)
    reg.backward()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e3)
    opt.step()
    var_after = _variances(layers)
    assert torch.all(var_after < var_before)


def test_dem_regularizer_is_none_when_eta_is_zero_and_after_pruning_ends_by_default():
    method, model = _apply(60, dem_weight=0.0)
    assert method.regularizer(model) is None
    method, model = _apply(60)
    assert method.regularizer(model) is not None
    method.on_step_end(model, 30, 60)  # t_f: the next step is past pruning
    assert method.regularizer(model) is None
    method, model = _apply(60, dem_after_pruning=True)
    method.on_step_end(model, 30, 60)
    assert method.regularizer(model) is not None
