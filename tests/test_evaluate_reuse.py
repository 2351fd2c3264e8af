"""Rank classification with side networks: one encoder pass per batch of sources, the same scores.

READ and LST wrap a frozen T5 and offer ``reusable_encoding``; without it the
harness ran the frozen encoder (and LST's side encoder) once per candidate
label — 26 times per example on an STS-B-like task — and charged that to the
method's evaluation window. The expected scores are the wrapper's own
forward on the raw inputs, one candidate at a time.
"""

from __future__ import annotations

import pytest
import torch

from energybench.methods.base import ApplyContext
from energybench.models.backbones import load_backbone
from energybench.registry import load_method
from energybench.tasks.loading import load_task
from energybench.train.batches import candidate_labels, encode_sources, sequence_log_likelihood
from energybench.train.evaluate import candidate_scores

CPU = torch.device("cpu")


def _trained_a_little(name: str):
    """The method on tiny-t5 with its trainable parameters moved off their initial values (READ's output map
    starts at zero, which would make any encoder reuse look right)."""
    bb = load_backbone("tiny-t5", seed=0)
    model = load_method(name)().apply(bb.model, ApplyContext(total_steps=10, seed=0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval(), bb.tokenizer


@pytest.mark.parametrize("name", ["read", "lst"])
def test_reused_encoding_gives_the_scores_of_running_each_candidate_whole(name):
    model, tok = _trained_a_little(name)
    data = load_task("synth-stsb", None)
    examples = data.validation[:5]
    encoder_calls = []
    hook = model.backbone.encoder.register_forward_hook(lambda *_: encoder_calls.append(1))
    try:
        scores = candidate_scores(model, tok, data.spec, examples, 64, 16, batch_size=5, device=CPU)
    finally:
        hook.remove()
    cands = candidate_labels(tok, data.spec, 16)
    assert len(encoder_calls) == 1 < len(cands)  # one batch of sources: one encoder pass for every candidate
    src = encode_sources(tok, data.spec, examples, 64)
    with torch.no_grad():
        whole = torch.stack([sequence_log_likelihood(model(**src, labels=c.expand(len(examples), -1)).logits,
                                                     c.expand(len(examples), -1)) for c in cands], dim=1)
    torch.testing.assert_close(scores, whole, rtol=1e-5, atol=1e-5)
    assert scores.std() > 0
