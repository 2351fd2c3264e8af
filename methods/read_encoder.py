"""READ on the encoder family (BERT, RoBERTa, DeBERTa, MiniLM): N_E over the encoder layers, no decoder.

The closest faithful reading of READ (arXiv 2305.15348, §2.2) for a model
with no decoder: the frozen backbone runs once under ``torch.no_grad()`` and
yields ϕ_E,i, the output of encoder layer i (i = 1..N_E, Hugging Face's
``hidden_states[i]``: BERT-lineage layers end in their own LayerNorm, so
nothing follows the last one but the pooler and head). The recurrence runs
over the layer index, each token an independent sequence:
h_E,0 = 0, h_E,i = N_E(ϕ_E,i, h_E,i−1). With no decoder there is no
cross-attention and so no Ψ term; the correction W_out·h_E,N_E is added to
the last layer's states, ϕ′ = ϕ_E,N_E + W_out·h_E,N_E, which then go
through the model's own pooler, dropout and (trainable) classification head
and its loss (``energybench.models.encoder.head_forward``). W_out starts at
zero, so READ at initialisation is the backbone. ``normalize_inputs``
RMS-normalises the states fed to the RNN, as on T5. Trainable: the RNN cell,
W_out and the head.
"""

from __future__ import annotations

import torch
from torch import nn

from energybench.methods.base import freeze, train_task_head
from energybench.methods.read import _rms_normalize


class READEncoderCorrector(nn.Module):
    """N_E and the zero-initialised output map W_out (no N_D, no Ψ: there is no decoder)."""

    def __init__(self, d_model: int, cell: type[nn.Module], rnn_dim: int):
        super().__init__()
        self.encoder_rnn = cell(d_model, rnn_dim)
        self.out = nn.Linear(rnn_dim, d_model, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """states (N_E, batch, seq, d) → correction (batch, seq, d)."""
        n, b, m, d = states.shape
        state = None
        for x in states.reshape(n, b * m, d):
            state = self.encoder_rnn(x, state)
        h = state[0] if isinstance(state, tuple) else state
        return self.out(h).reshape(b, m, d)


class READCorrectedModel(nn.Module):
    """A frozen backbone plus READ's corrector; the encoder and causal wrappers differ only in their forward."""

    def __init__(self, backbone: nn.Module, corrector: READEncoderCorrector, normalize_inputs: bool):
        super().__init__()
        self.backbone = backbone
        self.corrector = corrector
        self.normalize_inputs = normalize_inputs
        self.config = backbone.config


def seeded_corrector(model: nn.Module, d_model: int, cell: type[nn.Module], rnn_dim: int,
                     seed: int) -> READEncoderCorrector:
    """The corrector, initialised from ``seed`` without moving the caller's random state, on the backbone's
    device and in its dtype."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        corrector = READEncoderCorrector(d_model, cell, rnn_dim)
    p = next(model.parameters())
    return corrector.to(device=p.device, dtype=p.dtype)


class READEncoderModel(READCorrectedModel):
    """A frozen encoder plus READ's corrector before its pooler/head; what the loop trains."""

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        from energybench.models import encoder

        states = torch.stack(encoder.layer_states(self.backbone, input_ids, attention_mask, token_type_ids)[1:])
        last = states[-1]                                               # ϕ_E,N_E
        feed = _rms_normalize(states) if self.normalize_inputs else states
        adapted = last + self.corrector(feed)                           # ϕ′ = ϕ_E,N_E + W_out h_E,N_E
        return encoder.head_forward(self.backbone, adapted, attention_mask, labels)


def apply_read_encoder(model: nn.Module, cell: type[nn.Module], rnn_dim: int, normalize_inputs: bool,
                       seed: int) -> READEncoderModel:
    from energybench.models import encoder

    freeze(model)
    train_task_head(model)
    return READEncoderModel(model, seeded_corrector(model, encoder.hidden_size(model), cell, rnn_dim, seed),
                            normalize_inputs)
