"""full_ft, bitfit and lora train exactly what they should; LoRA starts as the backbone."""

from __future__ import annotations

import torch
from energybench.methods.base import ApplyContext, count_parameters
from energybench.methods.bitfit import BitFit
from energybench.methods.full_ft import FullFineTuning
from energybench.methods.lora import LoRA

from energybench.models.backbones import load_backbone

CTX = ApplyContext(total_steps=10, seed=0)
D, FF, VOCAB, ENC, DEC = 64, 128, 384, 2, 2  # the tiny-t5 preset


def _trainable_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (2, 12), generator=g)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(3, 200, (2, 4), generator=g))


def test_full_ft_trains_every_parameter():
    model = FullFineTuning().apply(load_backbone("tiny-t5").model, CTX)
    trainable, total = count_parameters(model)
    assert trainable == total == sum(p.numel() for p in model.parameters())


def test_bitfit_adds_zero_biases_to_t5_and_trains_only_them():
    backbone = load_backbone("tiny-t5").model
    before = backbone(**_inputs()).logits
    model = BitFit().apply(backbone, CTX)
    names = _trainable_names(model)
    assert names and all(n.endswith("bias") for n in names)
    # Hand count: encoder layer = q,k,v,o (4·D) + wi (FF) + wo (D) + 2 norms (2·D);
    # decoder layer adds cross-attention q,k,v,o (4·D) and a third norm (D);
    # plus the two final norms (2·D) and the LM head (VOCAB).
    enc_layer = 4 * D + FF + D + 2 * D
    dec_layer = 8 * D + FF + D + 3 * D
    expected = ENC * enc_layer + DEC * dec_layer + 2 * D + VOCAB
    assert count_parameters(model)[0] == expected
    # Zero biases change nothing but the kernel (addmm vs mm): equal up to float rounding.
    torch.testing.assert_close(model(**_inputs()).logits, before, rtol=1e-5, atol=1e-4)


def test_lora_trains_only_a_and_b_of_q_and_v_and_starts_as_the_backbone():
    backbone = load_backbone("tiny-t5").model
    before = backbone(**_inputs()).logits.detach()
    model = LoRA(LoRA.Settings(r=4)).apply(backbone, CTX)
    names = _trainable_names(model)
    assert names and all(("lora_A" in n or "lora_B" in n) and (".q." in n or ".v." in n) for n in names)
    # q and v of encoder self-attention (2 layers) and decoder self + cross attention (2 layers): 12 matrices,
    # each adds A (r×D) and B (D×r).
    assert count_parameters(model)[0] == 12 * (4 * D + D * 4)
    # B = 0: the update is exactly zero; only float rounding of a different kernel path remains.
    torch.testing.assert_close(model(**_inputs()).logits, before, rtol=1e-5, atol=1e-4)


def test_lora_merge_for_inference_keeps_outputs():
    torch.manual_seed(0)  # LoRA's A init and the B draw below: the same numbers every run
    backbone = load_backbone("tiny-t5").model
    backbone.eval()
    plain = backbone(**_inputs()).logits.detach()
    model = LoRA(LoRA.Settings(r=4)).apply(backbone, CTX)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    model.eval()
    unmerged = model(**_inputs()).logits.detach()
    merged = LoRA().for_inference(model)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # Merging W + s·BA reorders float32 sums only. A length-D dot product's rounding error grows like
    # sqrt(D)·eps relative to its values, so the logits may move by up to sqrt(D)·eps·max|logit|
    # (measured: ~3 eps·max|logit| over seeds 0-11); a merge that dropped or mis-scaled BA moves them by
    # the update itself, which is checked to be far larger.
    scale = unmerged.abs().max().item()
    tol = D ** 0.5 * torch.finfo(unmerged.dtype).eps * scale
    assert (unmerged - plain).abs().max().item() > 1000 * tol
    torch.testing.assert_close(merged(**_inputs()).logits, unmerged, rtol=0, atol=tol)


def test_bitfit_norm_biases_reach_the_forward_pass():
    """Count and zero-init pass without the forward hook; a nonzero added norm bias must change outputs."""
    model = BitFit().apply(load_backbone("tiny-t5").model, CTX)
    norm = model.encoder.final_layer_norm
    with torch.no_grad():
        norm.bitfit_bias.copy_(torch.linspace(-1.0, 1.0, D))
    x = torch.randn(2, 3, D, generator=torch.Generator().manual_seed(1))
    # T5's RMS norm written out: w · x / sqrt(mean(x²) + eps), then the added bias
    rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    torch.testing.assert_close(norm(x), norm.weight * rms + norm.bitfit_bias)
    before = model(**_inputs()).logits.detach()
    with torch.no_grad():
        model.decoder.final_layer_norm.bitfit_bias.fill_(0.5)
    assert (model(**_inputs()).logits - before).abs().max() > 1e-2
