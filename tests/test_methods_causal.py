"""Every method on the decoder-only presets (tiny-llama, tiny-gpt2) trains exactly what it should.

Expected trainable counts are hand counts from the presets' shapes:
tiny-llama d = 64, MLP 128, 2 layers, 4 query heads and 2 key/value heads of
16 (k, v project to 32), vocabulary 384, untied LM head; tiny-gpt2 d = 64,
MLP 128, 2 layers, fused c_attn 64 → 192.
"""

from __future__ import annotations

import pytest
import torch

from energybench.methods.base import ApplyContext, count_parameters
from energybench.models import causal
from energybench.models.backbones import load_backbone
from energybench.registry import load_method
from energybench.tasks import load_task
from energybench.train.batches import training_batch

CTX = ApplyContext(total_steps=10, seed=0)

# Llama layer matrices (in, out): q, k, v, o, gate, up, down.  GPT-2: c_attn, attn.c_proj, c_fc, mlp.c_proj.
LLAMA_MATS = [(64, 64), (64, 32), (64, 32), (64, 64), (64, 128), (64, 128), (128, 64)]
GPT2_MATS = [(64, 192), (64, 64), (64, 128), (128, 64)]


def _lora(r, mats):
    return 2 * sum(r * (i + o) for i, o in mats)


EXPECTED = {
    # bias per linear (out) + RMSNorm (d) ×2 per layer, final norm, LM head bias (vocab)
    ("tiny-llama", "bitfit"): 2 * (sum(o for _, o in LLAMA_MATS) + 2 * 64) + 64 + 384,
    # own biases: every Conv1D, ln_1, ln_2 per layer, ln_f
    ("tiny-gpt2", "bitfit"): 2 * (sum(o for _, o in GPT2_MATS) + 2 * 64) + 64,
    ("tiny-llama", "lora"): _lora(8, [LLAMA_MATS[0], LLAMA_MATS[2]]),        # peft default q_proj, v_proj
    ("tiny-gpt2", "lora"): _lora(8, [GPT2_MATS[0]]),                          # peft default c_attn
    ("tiny-llama", "dora"): _lora(8, [LLAMA_MATS[0], LLAMA_MATS[2]]) + 2 * (64 + 32),   # + magnitude per out unit
    ("tiny-gpt2", "dora"): _lora(8, [GPT2_MATS[0]]) + 2 * 192,
    ("tiny-llama", "adalora"): _lora(12, [LLAMA_MATS[0], LLAMA_MATS[2]]) + 2 * 2 * 12,  # + E per matrix
    ("tiny-gpt2", "adalora"): _lora(12, [GPT2_MATS[0]]) + 2 * 12,
    ("tiny-llama", "dydora"): _lora(12, LLAMA_MATS) + 2 * 7 * 12,               # init_r 12, + gates c
    ("tiny-gpt2", "dydora"): _lora(12, GPT2_MATS) + 2 * 4 * 12,
    ("tiny-llama", "adapter"): 4 * 2 * (64 * 64 + 64),                         # 2 per layer, bottleneck 64
    ("tiny-gpt2", "adapter"): 4 * 2 * (64 * 64 + 64),
    ("tiny-llama", "read"): 4 * 128 * (64 + 128) + 2 * 4 * 128 + 128 * 64,   # LSTM cell + W_out, no Ψ
    ("tiny-gpt2", "read"): 4 * 128 * (64 + 128) + 2 * 4 * 128 + 128 * 64,
    # side decoder at width 8 (layers 2·(q 64 + k 32 + v 32 + o 64 + gate/up/down 3·128 + norms 16), final norm 8)
    # + first_down and 2 ladders (64·8 + 8 each) + up (8·64 + 64) + 2 gates
    ("tiny-llama", "lst"): 2 * (64 + 32 + 32 + 64 + 3 * 128 + 16) + 8 + 3 * 520 + 576 + 2,
    # GPT-2 side: layers 2·(ln 16 + c_attn 216 + c_proj 72 + ln 16 + c_fc 144 + c_proj 136), ln_f 16, wpe 512·8
    ("tiny-gpt2", "lst"): 2 * (16 + 216 + 72 + 16 + 144 + 136) + 16 + 512 * 8 + 3 * 520 + 576 + 2,
}


def _batch(name):
    data = load_task("synth-sst2")
    b = load_backbone(name)
    return b, training_batch(b.tokenizer, data.spec, data.train[:4], 48, 8, "causal")


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=lambda k: f"{k[0]}-{k[1]}")
def test_method_trains_exactly_its_parameters(key):
    name, method_name = key
    backbone, batch = _batch(name)
    base_names = {n for n, _ in backbone.model.named_parameters()}
    cls = load_method(method_name)
    method = cls(cls.Settings())
    model = method.apply(backbone.model, CTX)
    trainable, _ = count_parameters(model)
    assert trainable == EXPECTED[key]
    out = model(**batch)
    loss = out.loss + (method.regularizer(model) or 0) if method.overrides("regularizer") else out.loss
    loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad or p.grad is None, n
    if method_name == "bitfit":
        assert all(n.endswith("bias") for n, p in model.named_parameters() if p.requires_grad)
    if method_name in ("adapter", "dydora", "lora", "dora", "adalora"):
        # the backbone's own weights stay frozen (new parameters only)
        own = {n.removeprefix("base_model.model.") for n, p in model.named_parameters() if p.requires_grad}
        assert not own & base_names


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("method_name", ["read", "lst"])
def test_side_networks_leave_the_backbone_gradient_free(name, method_name):
    backbone, batch = _batch(name)
    cls = load_method(method_name)
    model = cls(cls.Settings()).apply(backbone.model, CTX)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    # The frozen final norm and LM head sit after the correction, so gradients pass *through* them; the
    # embeddings and decoder layers run without a graph: even made trainable, they get no gradient.
    head = {id(p) for m in (causal.final_norm(model.backbone), causal.lm_head(model.backbone)) for p in m.parameters()}
    body = [p for p in model.backbone.parameters() if id(p) not in head]
    for p in body:
        p.requires_grad_(True)
    model(**batch).loss.backward()
    assert all(p.grad is None for p in body)
    side = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    assert side and any(p.grad is not None and p.grad.abs().sum() > 0 for p in side)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("method_name", ["read", "lora", "dydora", "bitfit"])
def test_method_starts_as_the_backbone(name, method_name):
    backbone, batch = _batch(name)
    before = backbone.model(**batch).logits.detach().clone()
    cls = load_method(method_name)
    model = cls(cls.Settings()).apply(backbone.model, CTX)
    torch.testing.assert_close(model(**batch).logits, before, atol=1e-5, rtol=1e-5)


def test_lora_all_linear_targets_every_layer_matrix():
    backbone, _ = _batch("tiny-llama")
    cls = load_method("lora")
    model = cls(cls.Settings(target_modules=["all-linear"])).apply(backbone.model, CTX)
    assert count_parameters(model)[0] == _lora(8, LLAMA_MATS)  # every linear but the LM head


def test_dydora_for_inference_folds_gpt2_conv1d_exactly():
    backbone, batch = _batch("tiny-gpt2")
    cls = load_method("dydora")
    method = cls(cls.Settings(dropout=0.0))
    model = method.apply(backbone.model, CTX)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("dydora_c"):
                p.uniform_(-0.5, 0.5)
    model.eval()
    live = model(**batch).logits.detach()
    merged = method.for_inference(model)
    torch.testing.assert_close(merged(**batch).logits, live, atol=1e-4, rtol=1e-4)
