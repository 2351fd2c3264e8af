"""READ on the decoder-only ``causal`` family (Llama, Qwen, Mistral, Phi, GPT-2): N_D over the decoder layers.

The reading of READ (arXiv 2305.15348, §2.2) for a model with no encoder:
the frozen backbone runs once under ``torch.no_grad()`` and yields ϕ_D,j,
the raw output of decoder layer j (j = 1..N_D), captured by forward hooks,
i.e. *before* the final norm (Hugging Face's ``hidden_states`` tuple ends
with the normed state instead). The recurrence runs over the layer index,
each token an independent sequence: h_D,0 = 0, h_D,j = N_D(ϕ_D,j, h_D,j−1).
With no encoder there is no cross-attention and so no Ψ term (x_j = ϕ_D,j).
The correction is added to the last layer's state, ϕ′ = ϕ_D,N_D + W_out·h_D,N_D,
which then goes through exactly what the backbone applies after its last
layer: the final norm (``norm`` / ``ln_f``) and the frozen LM head. The loss
is the causal LM's shifted cross-entropy over the continuation labels.
W_out starts at zero, so READ at initialisation is the backbone.
``normalize_inputs`` RMS-normalises the states fed to the RNN, as on T5.
Trainable: the RNN cell and W_out (the same corrector as on encoders).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from energybench.methods.base import freeze
from energybench.methods.read import _rms_normalize
from energybench.methods.read_encoder import READCorrectedModel, seeded_corrector


class READCausalModel(READCorrectedModel):
    """A frozen causal LM plus READ's corrector before its final norm and LM head; what the loop trains."""

    def forward(self, input_ids, attention_mask=None, labels=None) -> CausalLMOutput:
        from energybench.models import causal

        _, layer_out = causal.layer_states(self.backbone, input_ids, attention_mask)  # no graph
        states = torch.stack(layer_out)                                  # ϕ_D,1..N_D
        feed = _rms_normalize(states) if self.normalize_inputs else states
        adapted = states[-1] + self.corrector(feed)                      # ϕ′ = ϕ_D,N_D + W_out h_D,N_D
        logits = causal.lm_head(self.backbone)(causal.final_norm(self.backbone)(adapted))
        return CausalLMOutput(loss=causal.shifted_lm_loss(logits, labels), logits=logits)


def apply_read_causal(model: nn.Module, cell: type[nn.Module], rnn_dim: int, normalize_inputs: bool,
                      seed: int) -> READCausalModel:
    from energybench.models import causal

    freeze(model)
    return READCausalModel(model, seeded_corrector(model, causal.hidden_size(model), cell, rnn_dim, seed),
                           normalize_inputs)
