"""READ and Ladder Side-Tuning: frozen backbone, graph-free backbone pass, the papers' math, their costs.

Numbers asserted here come from the papers' formulas and hand counts, or are
comparisons between methods measured the same way (deterministic accounting).
"""

from __future__ import annotations

import random

import pytest
import torch
from energybench.methods.base import ApplyContext, count_parameters
from energybench.methods.full_ft import FullFineTuning
from energybench.methods.lora import LoRA
from energybench.methods.lst import LadderSideTuning
from energybench.methods.read import READ
from torch import nn

from energybench.measure.accounting import model_memory, train_step_flops
from energybench.models.backbones import load_backbone

CTX = ApplyContext(total_steps=10, seed=0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread_no_denormals():
    """One intra-op thread already for the module-scoped ``costs`` fixture (conftest's per-test
    fixture starts after it; on a busy 2-core machine spinning OpenMP workers made its steps 40×
    slower), and denormals flushed: full FT drives its toy loss to ~1e-6, where denormal arithmetic
    crawls. Neither changes a counted byte or FLOP."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)
D, FF, KV, HEADS, BUCKETS = 64, 128, 16, 4, 32  # the tiny-t5 presets


def _batch(b=2, src=12, tgt=4, seed=0, pad_last=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 200, (b, src), generator=g)
    mask = torch.ones_like(ids)
    if pad_last:
        ids[-1, src // 2:] = 0
        mask[-1, src // 2:] = 0
    return dict(input_ids=ids, attention_mask=mask, labels=torch.randint(3, 200, (b, tgt), generator=g))


def _own_params(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if not n.startswith("backbone.")}


METHODS = {
    "read": lambda: READ(READ.Settings(rnn_dim=16)),
    "lst": lambda: LadderSideTuning(),
}


# ------------------------------------------------------------------ frozen backbone

@pytest.mark.parametrize("name", sorted(METHODS))
def test_training_steps_leave_backbone_bit_identical_and_without_gradients(name):
    model = METHODS[name]().apply(load_backbone("tiny-t5").model, CTX)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    own_before = {n: p.detach().clone() for n, p in _own_params(model).items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for step in range(2):  # READ's output map is 0 at step 1, so its RNNs first get a gradient at step 2
        model(**_batch(seed=step)).loss.backward()
        assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
        opt.step()
        opt.zero_grad()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    own = _own_params(model)
    assert own and all(p.requires_grad for p in own.values())
    unchanged = [n for n, p in own.items() if torch.equal(p, own_before[n])]
    assert unchanged == [], f"{name}: method parameters that did not train: {unchanged}"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_backbone_pass_builds_no_graph_even_if_backbone_weights_require_grad(name):
    """The backbone runs under torch.no_grad(): no backward ever reaches it, whatever its flags say."""
    model = METHODS[name]().apply(load_backbone("tiny-t5").model, CTX)
    for p in model.backbone.parameters():
        p.requires_grad_(True)
    model(**_batch()).loss.backward()
    reached = [n for n, p in model.backbone.named_parameters() if p.grad is not None]
    # The frozen LM head (and the final norm for READ) sit *after* the side network's output; only those may be reached.
    assert all(n.startswith(("lm_head", "shared", "decoder.final_layer_norm")) for n in reached), reached
    assert not any(".block." in n for n in reached)


# ------------------------------------------------------------------ READ: the paper's math

def test_read_at_initialisation_is_exactly_the_backbone():
    backbone = load_backbone("tiny-t5").model
    batch = _batch(b=3, src=10, tgt=5)
    sdpa_logits = backbone(**batch).logits.detach()
    model = READ().apply(backbone, CTX)  # switches the decoder to eager attention (READ needs σ)
    eager_logits = backbone(**batch).logits.detach()
    logits = model(**batch).logits.detach()
    # W_out = 0: ϕ′ = ϕ_D,N_D + 0 exactly, then the very same final norm and LM head.
    assert torch.equal(logits, eager_logits)
    # Against the SDPA backbone only the attention kernel's float rounding differs.
    torch.testing.assert_close(logits, sdpa_logits, rtol=1e-5, atol=1e-4)


def _reference_read(model, batch) -> torch.Tensor:
    """Algorithm 1 of the paper written out token by token, with Hugging Face's own outputs for ϕ and σ."""
    bb, c = model.backbone, model.corrector
    last = {}
    hooks = [bb.encoder.block[-1].register_forward_hook(lambda m, i, o: last.__setitem__("enc", o[0])),
             bb.decoder.block[-1].register_forward_hook(lambda m, i, o: last.__setitem__("dec", o[0]))]
    with torch.no_grad():
        out = bb(**batch, output_hidden_states=True, output_attentions=True)
    for h in hooks:
        h.remove()
    # hidden_states = (embeddings, block 1 … block N−1 outputs, final_norm(block N output)): swap in block N's raw output.
    phi_e = list(out.encoder_hidden_states[1:-1]) + [last["enc"]]
    phi_d = list(out.decoder_hidden_states[1:-1]) + [last["dec"]]
    sigma = [a.mean(dim=1) for a in out.cross_attentions]            # heads averaged: (b, tgt, src)
    lstm_e, lstm_d = nn.LSTM(D, 16), nn.LSTM(D, 16)
    for lstm, cell in ((lstm_e, c.encoder_rnn), (lstm_d, c.decoder_rnn)):
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lstm, f"{w}_l0").data.copy_(getattr(cell, w))
    rms = lambda x: x / (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()  # noqa: E731
    b, m = batch["input_ids"].shape
    n = batch["labels"].shape[1]
    with torch.no_grad():
        h_e = torch.zeros(b, m, 16)
        for i in range(b):
            for a in range(m):                                       # each token its own sequence over layers
                seq = torch.stack([rms(p[i, a]) for p in phi_e])     # (N_E, d); h_E,0 = 0
                h_e[i, a] = lstm_e(seq)[0][-1]
        adapted = torch.zeros(b, n, D)
        for i in range(b):
            for a in range(n):
                xs = []
                for j, p in enumerate(phi_d):
                    psi = sum(sigma[j][i, a, beta] * c.psi(h_e[i, beta]) for beta in range(m))
                    xs.append(rms(p[i, a]) + psi)                    # x_j = ϕ_D,j + ψ_j
                h_d = lstm_d(torch.stack(xs))[0][-1]
                adapted[i, a] = phi_d[-1][i, a] + c.out(h_d)          # ϕ′ = ϕ_D,N_D + h_D,N_D
        return bb.lm_head(bb.decoder.final_layer_norm(adapted))       # tiny presets: no d**-0.5 rescale


def test_read_forward_equals_algorithm_1_written_token_by_token():
    model = READ(READ.Settings(rnn_dim=16)).apply(load_backbone("tiny-t5").model, CTX).eval()
    assert model.config.scale_decoder_outputs is False
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.corrector.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)        # out ≠ 0: a real correction
    batch = _batch(b=2, src=9, tgt=3)
    logits = model(**batch).logits.detach()
    torch.testing.assert_close(logits, _reference_read(model, batch), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(logits, model.backbone(**batch).logits, atol=1e-2)


def _read_count(rnn_type: str, h: int, d: int = D) -> int:
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[rnn_type]
    cell = gates * h * d + gates * h * h + 2 * gates * h          # W_ih, W_hh, b_ih, b_hh
    return 2 * cell + 2 * h * d                                    # N_E, N_D, Ψ, W_out


@pytest.mark.parametrize("rnn_type,rnn_dim", [("lstm", 128), ("gru", 32), ("rnn", 256)])
def test_read_trainable_parameters_do_not_grow_with_backbone_depth(rnn_type, rnn_dim):
    s = READ.Settings(rnn_type=rnn_type, rnn_dim=rnn_dim)
    two = count_parameters(READ(s).apply(load_backbone("tiny-t5").model, CTX))[0]
    four = count_parameters(READ(s).apply(load_backbone("tiny-t5-4layer").model, CTX))[0]
    assert two == four == _read_count(rnn_type, rnn_dim)


# ------------------------------------------------------------------ LST

R = 8
DS, FFS, KVS = D // R, FF // R, KV // R                             # 8, 16, 2
INNER = HEADS * KVS
ENC_BLOCK = 4 * DS * INNER + DS + 2 * DS * FFS + DS                  # self-attn q,k,v,o + norm, FF wi,wo + norm
DEC_BLOCK = ENC_BLOCK + 4 * DS * INNER + DS                          # + cross-attention and its norm
LADDER = D * DS + DS + 1                                             # Linear(d → d/r) with bias, and the gate α


def _lst_count(n_layers: int) -> int:
    per_stack = (D * DS + DS) + BUCKETS * HEADS + DS                  # first down-projection, relative bias, final norm
    return (2 * per_stack + n_layers * (ENC_BLOCK + LADDER) + n_layers * (DEC_BLOCK + LADDER)
            + DS * D + D)                                            # up-projection d/r → d with bias


def test_lst_trainable_parameters_match_hand_count_and_grow_per_layer():
    two = count_parameters(LadderSideTuning().apply(load_backbone("tiny-t5").model, CTX))[0]
    four = count_parameters(LadderSideTuning().apply(load_backbone("tiny-t5-4layer").model, CTX))[0]
    assert two == _lst_count(2) == 6612
    assert four - two == 2 * (ENC_BLOCK + LADDER) + 2 * (DEC_BLOCK + LADDER) == 4724


def test_lst_drop_layers_removes_side_blocks_and_their_ladders():
    s = LadderSideTuning.Settings(drop_layers=[1, 2])
    model = LadderSideTuning(s).apply(load_backbone("tiny-t5-4layer").model, CTX)
    assert model.side_encoder.kept == model.side_decoder.kept == [0, 3]
    assert count_parameters(model)[0] == _lst_count(2)
    model(**_batch()).loss.backward()
    with pytest.raises(ValueError, match="out of range"):
        LadderSideTuning(LadderSideTuning.Settings(drop_layers=[4])).apply(load_backbone("tiny-t5-4layer").model, CTX)


def test_lst_pruning_with_r_1_reproduces_every_backbone_block():
    """r = 1 keeps every dimension, so the pruned copies must compute exactly what the backbone blocks do."""
    backbone = load_backbone("tiny-t5").model
    model = LadderSideTuning(LadderSideTuning.Settings(reduction_factor=1)).apply(backbone, CTX)
    x = torch.randn(2, 7, D, generator=torch.Generator().manual_seed(0))
    y = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for side, orig in zip(model.side_encoder.blocks, backbone.encoder.block):
            torch.testing.assert_close(side(x)[0], orig(x)[0], rtol=0, atol=0)
        for side, orig in zip(model.side_decoder.blocks, backbone.decoder.block):
            torch.testing.assert_close(side(y, encoder_hidden_states=x)[0], orig(y, encoder_hidden_states=x)[0],
                                       rtol=0, atol=0)


def test_lst_magnitude_pruning_keeps_the_dimensions_with_the_largest_weights():
    backbone = load_backbone("tiny-t5").model
    k, unit = 5, 7
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if p.dim() == 2 and p.shape[1] == D and "relative" not in name and not name.endswith((".o.weight", ".wo.weight")):
                p[:, k] *= 100                                    # everything reading residual dim k
            elif name.endswith((".o.weight", ".wo.weight")):
                p[k, :] *= 100                                    # everything writing it
        ff = backbone.encoder.block[0].layer[-1].DenseReluDense
        ff.wi.weight[unit] *= 1000
        ff.wo.weight[:, unit] *= 1000
    model = LadderSideTuning().apply(backbone, CTX)
    assert k in model.kept_residual_dims and len(model.kept_residual_dims) == DS
    kept = torch.tensor(model.kept_residual_dims)
    side_wi = model.side_encoder.blocks[0].layer[-1].DenseReluDense.wi.weight
    assert any(torch.equal(row, ff.wi.weight[unit, kept]) for row in side_wi)


# ------------------------------------------------------------------ costs (deterministic accounting)

COST_BATCH = _batch(b=8, src=64, tgt=4, pad_last=False)


def _loss(model):
    return model(**COST_BATCH).loss


@pytest.fixture(scope="module")
def costs():
    methods = {"full_ft": FullFineTuning(), "lora": LoRA(), "read": READ(READ.Settings(rnn_dim=16)),
               "lst": LadderSideTuning()}
    out = {}
    for name, method in methods.items():
        model = method.apply(load_backbone("tiny-t5").model, CTX)
        out[name] = (model_memory(model, _loss, lambda p: torch.optim.AdamW(p, lr=1e-3)),
                     train_step_flops(model, _loss))
    return out


def test_side_networks_need_less_memory_than_lora_and_at_most_half_of_full_ft(costs):
    """Batch 8 × 64 source tokens × 4 target tokens on tiny-t5; READ with rnn_dim 16 (d/4; the paper's
    128 on t5-base is d/6). Measured: read 0.21, lst 0.36 of full_ft; read 0.40, lst 0.69 of lora."""
    full, lora = costs["full_ft"][0].total_bytes, costs["lora"][0].total_bytes
    for name in ("read", "lst"):
        mem = costs[name][0].total_bytes
        assert mem < lora, f"{name}: {mem / lora:.2f} of lora's mem_model_bytes"
        assert mem <= full / 2, f"{name}: {mem / full:.2f} of full_ft's mem_model_bytes"


def test_read_saved_activations_are_a_small_fraction_of_loras(costs):
    """READ saves one d-vector per token per layer plus its small RNN's states; LoRA saves everything a
    backward through the backbone needs. Measured: 0.24 of LoRA's saved-activation bytes."""
    ratio = costs["read"][0].activations_bytes / costs["lora"][0].activations_bytes
    assert ratio < 0.3, f"read/lora saved activations = {ratio:.2f}"


def test_side_network_training_steps_cost_fewer_flops_than_full_ft(costs):
    """No backward through the backbone: a step is about one backbone forward (⅓ of full fine-tuning's
    forward + backward) plus the side network. Measured: read 0.38, lst 0.33 of full_ft's FLOPs."""
    full = costs["full_ft"][1]
    for name in ("read", "lst"):
        assert costs[name][1] < full / 2, f"{name}: {costs[name][1] / full:.2f} of full_ft's training FLOPs"


# ------------------------------------------------------------------ they learn

def _alphabet_task(n: int, seed: int):
    """Source: 12 letters, all from a–h (label "1") or all from p–w (label "0"); bytes as ByT5 ids."""
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        label = rng.random() < 0.5
        text = "".join(rng.choice("abcdefgh" if label else "pqrstuvw") for _ in range(12))
        src.append([b + 3 for b in text.encode()] + [1])
        tgt.append([ord("1" if label else "0") + 3, 1])
    return torch.tensor(src), torch.tensor(tgt)


@pytest.mark.parametrize("name", ["full_ft", "read", "lst"])
def test_method_learns_a_toy_classification(name):
    """200 AdamW steps at lr 3e-3, batch 32, on a random tiny-t5. Measured (first 10 → last 20 steps'
    mean loss, held-out accuracy): full_ft 4.49 → 0.000, 1.00; read 31.0 → 0.054, 0.98; lst 2.95 → 0.001, 1.00."""
    method = {"full_ft": FullFineTuning(), **{k: f() for k, f in METHODS.items()}}[name]
    x, y = _alphabet_task(2048, seed=1)
    xt, yt = _alphabet_task(256, seed=2)
    model = method.apply(load_backbone("tiny-t5").model, CTX)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(200):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = model(input_ids=x[idx], attention_mask=torch.ones_like(x[idx]), labels=y[idx]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=xt, attention_mask=torch.ones_like(xt), labels=yt).logits
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    accuracy = (logits[:, 0].argmax(-1) == yt[:, 0]).float().mean().item()
    assert last < 0.1 * first, f"{name}: loss {first:.3f} → {last:.3f}"
    assert accuracy >= 0.9, f"{name}: held-out accuracy {accuracy:.3f} (chance 0.5)"
