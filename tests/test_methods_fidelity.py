"""Fidelity to the papers and the authors' code (issue 15): LST's layer setting and initialisation,
dynamic-rank DoRA's memory-lean dropout, AdaLoRA's targets, budgets that survive the best-checkpoint
restore, READ's σ.

Expected numbers are computed independently of the code under test: hand counts from the shapes, peft
built directly, the plain autograd graph, the paper's definitions.
"""

from __future__ import annotations

import math

import pytest
import torch
from energybench.methods.adalora import AdaLoRA
from energybench.methods.base import ApplyContext, count_parameters
from energybench.methods.dydora import DyDoRA, DyDoRALinear, dydora_layers, prune_schedule
from energybench.methods.lst import AUTHORS_T5_BASE_SIDE_LAYERS, LadderSideTuning
from energybench.methods.read import READ
from torch import nn
from transformers import T5ForConditionalGeneration

from energybench.measure.accounting import model_memory
from energybench.models.backbones import load_backbone, tiny_t5_config

CTX = ApplyContext(total_steps=10, seed=0)


def _batch(b=4, src=12, tgt=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 200, (b, src), generator=g)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(3, 200, (b, tgt), generator=g))


# ------------------------------------------------------------------ LST: the authors' layer setting

def _lst_trainable(d, d_ff, d_kv, heads, r, kept, buckets=32):
    """Hand count of LST's trainable parameters for ``kept`` side blocks per stack (relu FFN, sampling biases)."""
    ds, ffs, inner = d // r, d_ff // r, heads * (d_kv // r)
    enc_block = 4 * ds * inner + ds + 2 * ds * ffs + ds                   # self-attn q,k,v,o + norm, wi, wo + norm
    dec_block = enc_block + 4 * ds * inner + ds                           # + cross-attention and its norm
    ladder = d * ds + ds + 1                                              # Linear(d → d/r) with bias, gate α
    per_stack = (d * ds + ds) + buckets * heads + ds                      # first down, relative bias, final norm
    return 2 * per_stack + kept * (enc_block + ladder) + kept * (dec_block + ladder) + ds * d + d


def _twelve_layer_tiny():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return T5ForConditionalGeneration(tiny_t5_config("tiny-t5", num_layers=12, num_decoder_layers=12))


def test_lst_authors_t5_base_setting_keeps_nine_side_blocks_per_stack():
    """The authors' list [1,2,3,5,6,7,9,10,11] names the side blocks that exist (layers 0, 4, 8 have none)."""
    assert AUTHORS_T5_BASE_SIDE_LAYERS == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    kept = [i for i in range(12) if i not in (0, 4, 8)]
    by_kept = LadderSideTuning(LadderSideTuning.Settings(side_layers=AUTHORS_T5_BASE_SIDE_LAYERS)).apply(
        _twelve_layer_tiny(), CTX)
    by_drop = LadderSideTuning(LadderSideTuning.Settings(drop_layers=[0, 4, 8])).apply(_twelve_layer_tiny(), CTX)
    for model in (by_kept, by_drop):
        for stack in (model.side_encoder, model.side_decoder):
            assert stack.kept == kept
            assert len(stack.blocks) == len(stack.downs) == stack.alphas.numel() == 9
        assert count_parameters(model)[0] == _lst_trainable(64, 128, 16, 4, 8, kept=9)
    by_kept(**_batch()).loss.backward()
    with pytest.raises(ValueError, match="not both"):
        LadderSideTuning.Settings(side_layers=[1], drop_layers=[0])
    with pytest.raises(ValueError, match="side_layers .*out of range"):
        LadderSideTuning(LadderSideTuning.Settings(side_layers=[12])).apply(_twelve_layer_tiny(), CTX)


def test_lst_authors_setting_on_t5_base_shapes_trains_3_88_m_parameters():
    """t5-base shapes (backbone on the meta device, nothing allocated): 9 kept blocks give the issue's 3.88 M
    trainable parameters; reading the list as *dropped* gave 3 blocks and 1.44 M."""
    cfg = tiny_t5_config("t5-base-random", vocab_size=32128)
    with torch.device("meta"):
        backbone = T5ForConditionalGeneration(cfg)
    s = LadderSideTuning.Settings(side_layers=AUTHORS_T5_BASE_SIDE_LAYERS, init="random")
    model = LadderSideTuning(s).apply(backbone, CTX)
    assert len(model.side_encoder.blocks) == len(model.side_decoder.blocks) == 9
    trainable = count_parameters(model)[0]
    assert trainable == _lst_trainable(768, 3072, 64, 12, 8, kept=9) == 3_878_706
    assert _lst_trainable(768, 3072, 64, 12, 8, kept=3) == 1_441_638


# ------------------------------------------------------------------ LST: the authors' initialisation

def test_lst_default_init_prunes_blocks_and_final_norm_and_leaves_ladders_at_linear_default():
    backbone = load_backbone("tiny-t5").model
    model = LadderSideTuning().apply(backbone, CTX)
    kept = torch.tensor(model.kept_residual_dims)
    for side, stack in ((model.side_encoder, backbone.encoder), (model.side_decoder, backbone.decoder)):
        assert torch.equal(side.final_norm.weight, stack.final_layer_norm.weight[kept])
        assert torch.equal(side.blocks[0].layer[0].layer_norm.weight, stack.block[0].layer[0].layer_norm.weight[kept])
        for lin in (side.first_down, *side.downs):
            bound = 1 / math.sqrt(lin.in_features)          # nn.Linear's default: U(−1/√in, 1/√in), bias too
            assert lin.weight.abs().max() <= bound and lin.bias.abs().max() <= bound
            assert lin.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)
    up = model.up
    assert up.weight.abs().max() <= 1 / math.sqrt(up.in_features) and up.bias.abs().max() > 0


def test_lst_selection_ladder_init_is_kept_as_an_option():
    model = LadderSideTuning(LadderSideTuning.Settings(ladder_init="selection")).apply(load_backbone("tiny-t5").model, CTX)
    kept = model.kept_residual_dims
    selection = torch.zeros(len(kept), 64)
    selection[torch.arange(len(kept)), kept] = 1
    for lin in (model.side_encoder.first_down, *model.side_encoder.downs, *model.side_decoder.downs):
        assert torch.equal(lin.weight, selection) and not lin.bias.any()
    assert torch.equal(model.up.weight, selection.T)
    with pytest.raises(ValueError, match="needs init 'pruned'"):
        LadderSideTuning.Settings(ladder_init="selection", init="random")


# ------------------------------------------------------------------ dydora: dropout without the dropped copy

def _dydora(recompute: bool):
    model = DyDoRA(DyDoRA.Settings(recompute_dropout=recompute)).apply(load_backbone("tiny-t5").model, CTX)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # gates off 0, so A and B get gradients
        for layer in dydora_layers(model).values():
            layer.dydora_c.copy_(torch.randn(layer.init_r, generator=g))
    return model.train()


def test_dydora_recomputed_dropout_gives_bit_identical_loss_and_gradients():
    grads, losses = {}, {}
    for recompute in (False, True):
        model = _dydora(recompute)
        torch.manual_seed(7)
        loss = model(**_batch()).loss
        loss.backward()
        losses[recompute] = loss.detach()
        grads[recompute] = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert torch.equal(losses[False], losses[True])
    assert grads[True].keys() == grads[False].keys() and len(grads[True]) == 3 * 32
    differing = [n for n in grads[True] if not torch.equal(grads[True][n], grads[False][n])]
    assert differing == []
    assert all(grads[True][n].abs().sum() > 0 for n in grads[True] if n.endswith("dydora_A"))


def test_dydora_modules_fed_the_same_input_draw_independent_masks():
    """q, k and v read the same normalised x; the paper's per-module dropout needs a mask each."""
    model = _dydora(True)
    masks = []

    def pack(t):
        if t.dtype == torch.bool:
            masks.append(t)
        return t

    attn = model.encoder.block[1].layer[0].SelfAttention
    x = torch.randn(2, 5, 64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = attn.q(x) + attn.k(x) + attn.v(x)
    out.sum().backward()
    assert len(masks) == 3 and all(m.shape == x.shape for m in masks)
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
    keep = torch.stack(masks).float().mean()
    assert keep == pytest.approx(0.9, abs=0.05)


def test_dydora_recomputed_dropout_saves_fewer_activation_bytes_by_the_hand_count():
    """Plain path, per adapted module with input x of N floats: F.linear keeps the dropped copy (4N bytes) for
    A's gradient, and the multiply by the float mask keeps that mask when x needs a gradient. Recomputing
    path: one bool mask (N bytes) and nothing else new — x is saved by the frozen base projection in both.
    So the saving is at least 3N bytes per module, and the masks are exactly N bytes each."""
    batch = _batch(b=8, src=16, tgt=4)
    inputs = []
    model = _dydora(False)
    hooks = [m.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].numel()))
             for m in model.modules() if isinstance(m, DyDoRALinear)]
    model(**batch)
    for h in hooks:
        h.remove()

    def loss(m):
        return m(**batch).loss

    def adamw(p):
        return torch.optim.AdamW(p, lr=1e-3)

    lean_model = _dydora(True)
    plain, lean = model_memory(model, loss, adamw), model_memory(lean_model, loss, adamw)
    assert len(inputs) == 32
    assert lean.activations_bytes < plain.activations_bytes
    assert plain.activations_bytes - lean.activations_bytes >= 3 * sum(inputs)
    assert (lean.params_bytes, lean.grads_bytes, lean.optimizer_bytes) == (
        plain.params_bytes, plain.grads_bytes, plain.optimizer_bytes)
    masks = {}
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: masks.setdefault(t.untyped_storage().data_ptr(), t) if t.dtype == torch.bool else t,
            lambda t: t):
        loss(lean_model).backward()
    assert sum(m.untyped_storage().nbytes() for m in masks.values()) == sum(inputs)


def test_dydora_without_dropout_or_in_eval_takes_the_plain_path():
    model = DyDoRA(DyDoRA.Settings(dropout=0.0)).apply(load_backbone("tiny-t5").model, CTX).train()
    seen = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: seen.append(t.dtype) or t, lambda t: t):
        model(**_batch()).loss.backward()
    assert torch.bool not in seen


# ------------------------------------------------------------------ AdaLoRA: the paper's six targets

def test_adalora_default_targets_are_the_papers_six_and_match_peft_built_directly():
    from peft import AdaLoraConfig, get_peft_model

    ours = AdaLoRA().apply(load_backbone("tiny-t5").model, ApplyContext(total_steps=100, seed=0))
    expected = {}
    for targets in (["q", "k", "v", "o", "wi", "wo"], None):  # None: peft's own T5 default
        peft_model = get_peft_model(load_backbone("tiny-t5").model, AdaLoraConfig(
            task_type="SEQ_2_SEQ_LM", init_r=12, target_r=8, total_step=100, target_modules=targets))
        expected[str(targets)] = peft_model.get_nb_trainable_parameters()[0]
    assert AdaLoRA.Settings().target_modules == ["q", "k", "v", "o", "wi", "wo"]
    assert count_parameters(ours)[0] == expected[str(["q", "k", "v", "o", "wi", "wo"])] == expected["None"]
    # hand count, tiny-t5: per layer 4 attention matrices 64→64 (+4 in decoder cross-attention), wi 64→128, wo 128→64
    per = lambda i, o: 12 * i + 12 + o * 12  # noqa: E731  A (r×in), E (r×1), B (out×r)
    hand = 2 * (4 * per(64, 64) + per(64, 128) + per(128, 64)) + 2 * (8 * per(64, 64) + per(64, 128) + per(128, 64))
    assert count_parameters(ours)[0] == hand == 55_680
    narrowed = AdaLoRA(AdaLoRA.Settings(target_modules=["q", "v"])).apply(load_backbone("tiny-t5").model,
                                                                         ApplyContext(total_steps=100, seed=0))
    assert count_parameters(narrowed)[0] == 12 * per(64, 64)


# ------------------------------------------------------------------ budgets survive the best-checkpoint restore

def _fit_with_best_score_first(method, monkeypatch, total_steps=20, patience=2):
    """Train with validation scores that only get worse, so the best score comes before pruning ends."""
    from energybench.tasks.loading import load_task
    from energybench.train import loop
    from energybench.train.settings import TrainingSettings

    calls = []

    def worsening(*_args, **_kwargs):
        calls.append(1)
        return 100.0 - len(calls), {}

    monkeypatch.setattr(loop, "evaluate", worsening)
    backbone = load_backbone("tiny-t5")
    data = load_task("synth-sst2", max_train_examples=64)
    cfg = TrainingSettings(learning_rate=1e-2, batch_size=8, max_steps=total_steps, eval_every_steps=2,
                           patience=patience, max_source_length=32, max_target_length=4)
    model = method.apply(backbone.model, ApplyContext(total_steps=total_steps, seed=0))
    res = loop.fit(model, method, backbone.tokenizer, data, cfg, total_steps=total_steps,
                   device=torch.device("cpu"), seed=0, log=lambda _m: None)
    return model, res


def test_dydora_best_checkpoint_is_taken_after_pruning_ends_and_has_the_final_budget(monkeypatch):
    method = DyDoRA()
    model, res = _fit_with_best_score_first(method, monkeypatch)
    _, t_f, _ = prune_schedule(20)
    assert t_f == 10
    assert [h["step"] for h in res.history][:2] == [2, 4]        # scored better than anything after t_f
    assert res.best_step == t_f                                  # the first evaluation at the final budget
    assert res.steps == t_f + 2 * 2                              # patience counts only evaluations from t_f on
    layers = dydora_layers(model)
    live = sum(int((layer.dydora_c != 0).sum()) for layer in layers.values())
    assert live == 8 * len(layers) == 256
    facts = method.describe(model)
    assert facts["total_live"] == live and facts["pruning_finished"] is True


def test_adalora_best_checkpoint_is_taken_once_the_allocation_is_final(monkeypatch):
    method = AdaLoRA(AdaLoRA.Settings(init_r=4, target_r=2, tinit=2, tfinal=4, target_modules=["q", "v"]))
    model, res = _fit_with_best_score_first(method, monkeypatch, patience=None)
    assert res.best_step == 20 - 4 and res.steps == 20
    facts = method.describe(model)
    live = sum(int((e["default"] != 0).sum()) for name, e in
               ((n, m.lora_E) for n, m in model.named_modules() if hasattr(m, "lora_E")))
    assert facts["total_rank"] == live == facts["target_total_rank"] == 2 * 12
    assert facts["allocation_final"] is True


def test_methods_without_a_budget_accept_every_checkpoint():
    from energybench.methods.lora import LoRA

    assert not LoRA.overrides("checkpoint_allowed")
    assert LoRA().checkpoint_allowed(nn.Linear(1, 1), 1, 100) is True


# ------------------------------------------------------------------ READ: σ is the plain softmax

def test_read_cross_attention_probabilities_sum_to_one_with_attention_dropout_in_training():
    cfg = tiny_t5_config("tiny-t5")
    cfg.dropout_rate = 0.3                               # T5's attention dropout reads config.dropout_rate
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = T5ForConditionalGeneration(cfg)
    model = READ(READ.Settings(rnn_dim=16)).apply(backbone, CTX).train()
    assert [m.dropout for n, m in model.named_modules() if n.endswith("EncDecAttention")] == [0.3, 0.3]
    b = _batch()
    mask = b["attention_mask"].clone()
    mask[-1, 6:] = 0
    torch.manual_seed(0)
    _, _, cross = model.backbone_states(b["input_ids"], mask, backbone._shift_right(b["labels"]), None)
    assert cross.shape == (2, 4, 5, 12)
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, 4, 5), rtol=0, atol=1e-6)
    assert cross[:, -1, :, 6:].max() < 1e-6              # padded source positions get no probability
    # Without dropout (eval mode) the tapped σ is exactly the probabilities T5's cross-attention returns.
    model.eval()
    returned = []
    hooks = [blk.layer[1].register_forward_hook(lambda _m, _i, out: returned.append(out[-1].mean(dim=1)))
             for blk in backbone.decoder.block]
    _, _, plain = model.backbone_states(b["input_ids"], mask, backbone._shift_right(b["labels"]), None)
    for h in hooks:
        h.remove()
    assert torch.equal(plain, torch.stack(returned))
    model.train()
    model(**b).loss.backward()                           # training still works with the tap in place
