"""Decoder-only (``causal`` family) placements of the methods whose targets are found by structure, not by peft.

Kept apart from the T5/encoder code of each method so every method file
stays one job; the methods call in here when ``family_of(model)`` is causal.
Structure comes from ``energybench.models.causal`` (layers, attention/MLP
blocks, weight matrices), so Llama, Qwen2/3, Mistral, Phi and GPT-2 share one
path.

- dydora: every weight matrix of every decoder layer — q, k, v, o and the
  MLP projections (Llama: q_proj, k_proj, v_proj, o_proj, gate_proj,
  up_proj, down_proj; GPT-2: the fused c_attn, attn.c_proj, mlp.c_fc,
  mlp.c_proj). GPT-2's ``Conv1D`` stores its weight transposed; it is
  replaced by an ``nn.Linear`` computing the same map before it is wrapped,
  so one ``DyDoRALinear`` serves both. The embedding and LM head are never
  adapted.
- adapter: Houlsby adapters on the output of each layer's attention block
  and of its MLP block, before the layer's residual add (Llama:
  ``hidden = residual + self_attn(norm(hidden))``; GPT-2 the same with
  ``attn``), two per layer.
"""

from __future__ import annotations

from torch import nn


def dydora_targets(model: nn.Module, settings) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of the matrices dydora adapts; Conv1D replaced by an equivalent nn.Linear."""
    from energybench.models import causal

    targets = list(settings.target_modules) if "target_modules" in settings.model_fields_set else None
    out = []
    for parent, attr, _ in causal.matrix_modules(model, targets):
        module = getattr(parent, attr)
        if not isinstance(module, nn.Linear):
            setattr(parent, attr, causal.as_linear(module))
        out.append((parent, attr))
    return out


def attach_adapters(model: nn.Module, settings, make_adapter, hook) -> None:
    """Register one adapter (``make_adapter(d)``) on each attention and MLP block output via ``hook``."""
    from energybench.models import causal

    d = causal.hidden_size(model)
    ref = next(model.parameters())
    for _, block in causal.blocks(model):
        block.adapter = make_adapter(d).to(dtype=ref.dtype, device=ref.device)
        block.register_forward_hook(hook)
    if settings.train_layer_norms:
        for name, module in model.named_modules():
            if "norm" in type(module).__name__.lower() or name.rsplit(".", 1)[-1].startswith("ln_"):
                for p in module.parameters(recurse=False):
                    p.requires_grad_(True)
