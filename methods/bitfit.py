"""BitFit (Ben Zaken et al., 2022): only bias terms train.

T5 has no bias terms at all (bias-free linear layers, RMS-style layer norm).
On such a backbone we do what the LST authors' code did for its T5 BitFit
baseline: add zero-initialised biases to every attention and feed-forward
projection, every layer norm and the LM head, and train only those. The model
is unchanged at initialisation (the biases are 0); the added parameters are
visible in the trainable-parameter count. A backbone that already has biases
trains its own biases and gets none added.

Encoder family (BERT, RoBERTa, DeBERTa, MiniLM): the backbone's own biases
(every linear layer and layer norm has one) and the new classification head
train, as in the BitFit paper's GLUE experiments; nothing is added.

Causal family: GPT-2 has biases (every ``Conv1D`` and LayerNorm) and trains
its own. Llama, Qwen3 and Mistral are bias-free, so, as on T5, zero biases
are added to every linear layer (q, k, v, o, the MLP projections and the LM
head) and every RMSNorm, and only those train; they are counted in the
trainable parameters. (Qwen2 has q, k, v biases of its own, so by the rule
above it trains those and gets none added.)
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from energybench.methods.base import ApplyContext, Method, MethodSettings, freeze, train_task_head


class BitFitSettings(MethodSettings):
    add_missing_biases: bool = Field(True, description="add zero biases on a bias-free backbone such as T5")


def _add_norm_bias(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output + module.bitfit_bias


def _is_norm(module: nn.Module) -> bool:
    return "LayerNorm" in type(module).__name__ or "RMSNorm" in type(module).__name__


def _has_own_bias(model: nn.Module) -> bool:
    return any(name.endswith("bias") for name, _ in model.named_parameters())


class BitFit(Method):
    name = "bitfit"
    summary = "only bias terms train (zero biases added on bias-free T5)"
    paper = "Ben Zaken et al., ACL 2022"
    Settings = BitFitSettings

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        freeze(model)
        if self.settings.add_missing_biases and not _has_own_bias(model):
            self._add_biases(model)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.requires_grad_(True)
        train_task_head(model)  # encoder family: the new classification head trains too (BitFit §3)
        return model

    @staticmethod
    def _add_biases(model: nn.Module) -> None:
        for module in list(model.modules()):
            ref = next(module.parameters(recurse=False), None)
            if isinstance(module, nn.Linear) and module.bias is None:
                module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype, device=module.weight.device))
            elif _is_norm(module) and getattr(module, "bias", None) is None and ref is not None:
                module.register_parameter("bitfit_bias", nn.Parameter(torch.zeros_like(module.weight)))
                module.register_forward_hook(_add_norm_bias)
