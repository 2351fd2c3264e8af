"""Houlsby bottleneck adapters (Houlsby et al., ICML 2019) on a T5 encoder–decoder.

An adapter maps h ↦ h + W_up·f(W_down·h + b_down) + b_up, a bottleneck of
size m with its own skip connection. Houlsby et al. insert one after the
attention block and one after the feed-forward block of every layer, on the
sublayer's output *before* the layer's residual add. On T5 we place them:

- encoder layer: after self-attention, after the feed-forward block (2);
- decoder layer: after self-attention, after cross-attention, after the
  feed-forward block (3) — cross-attention is an attention block of its own,
  so it gets an adapter too (``after_cross_attention=False`` drops it).

Hugging Face's T5 sublayers compute ``h + dropout(sublayer(norm(h)))``. The
adapter is registered as a child of the sublayer module (``SelfAttention``,
``EncDecAttention``, ``DenseReluDense``) and applied to its output by a
forward hook, so T5's residual dropout and add come after it, as in Houlsby's
figure 2, and T5's own modules stay untouched.

Initialisation: Houlsby et al. (§3.6) draw the projections from a zero-mean
normal with std 1e-2 truncated at two standard deviations; biases start at 0.
The adapter is then *near* the identity (the tests state the tolerance).
``init="zero_up"`` zeroes W_up instead, which makes it the identity exactly.
Inference keeps the adapters: there is nothing to merge, the nonlinearity
sits between the projections.

Deliberate differences from the paper, and the setting that restores its form:

- frozen layer norms: only adapter parameters train (as in READ's
  comparison); Houlsby et al. also trained the layer norms:
  ``train_layer_norms=True``.
- an adapter after the decoder's cross-attention too (Houlsby's BERT has no
  cross-attention; it is an attention block of its own): the paper's literal
  "after the attention and after the feed-forward block" is
  ``after_cross_attention=False``.

Only adapter parameters train (Houlsby also trained the layer norms;
``train_layer_norms=True`` does that). Inference keeps the adapters: there is
nothing to merge, the nonlinearity sits between the projections.

Encoder family (BERT, where Houlsby et al. defined it): one adapter on the
output of each layer's attention output projection (``attention.output.dense``)
and one on the output of its feed-forward block (``output.dense``), i.e.
before BERT's dropout, residual add and LayerNorm, two per layer. The new
classification head trains too (Houlsby trained it); ``train_layer_norms``
adds the LayerNorms. ``after_cross_attention`` has no meaning there.

Causal family (Llama, Qwen, Mistral, GPT-2): one adapter on the output of
each decoder layer's attention block (``self_attn`` / ``attn``) and one on
its MLP block, before the layer's residual add, two per layer
(``methods/causal_support.py``); ``train_layer_norms`` adds the RMSNorms /
LayerNorms. ``after_cross_attention`` has no meaning there.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from energybench.methods.base import ApplyContext, Method, MethodSettings, freeze, is_encoder, train_task_head
from energybench.models.family import family_of

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class AdapterSettings(MethodSettings):
    bottleneck: PositiveInt = Field(64, description="bottleneck size m (READ's grid: 32, 64)")
    activation: Literal["relu", "gelu", "tanh", "silu"] = Field("relu", description="nonlinearity f")
    init: Literal["houlsby_normal", "zero_up"] = Field(
        "houlsby_normal", description="houlsby_normal: N(0, init_std²) truncated at ±2 std; zero_up: W_up = 0")
    init_std: float = Field(1e-2, gt=0, description="std of the truncated normal (Houlsby: 1e-2)")
    after_cross_attention: bool = Field(True, description="also adapt the decoder's cross-attention output")
    train_layer_norms: bool = Field(False, description="also train the backbone's layer norms (Houlsby did)")


class BottleneckAdapter(nn.Module):
    """h + W_up·f(W_down·h): near the identity at initialisation."""

    def __init__(self, d_model: int, bottleneck: int, activation: str, init: str, init_std: float,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.down = nn.Linear(d_model, bottleneck)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, d_model)
        with torch.no_grad():
            for lin in (self.down, self.up):
                nn.init.trunc_normal_(lin.weight, std=init_std, a=-2 * init_std, b=2 * init_std, generator=generator)
                lin.bias.zero_()
            if init == "zero_up":
                self.up.weight.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


def _adapt_output(module: nn.Module, inputs: tuple, output):
    """Forward hook: run the module's adapter on its output (first element of a tuple output)."""
    if isinstance(output, tuple):
        return (module.adapter(output[0]), *output[1:])
    return module.adapter(output)


def _sublayers(model: nn.Module, cross: bool) -> list[tuple[str, nn.Module]]:
    """(name, module) of every sublayer whose output gets an adapter, in model order."""
    wanted = {"SelfAttention", "DenseReluDense"} | ({"EncDecAttention"} if cross else set())
    return [(name, m) for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in wanted]


class HoulsbyAdapter(Method):
    name = "adapter"
    summary = "Houlsby bottleneck adapters after every attention and feed-forward block"
    paper = "Houlsby et al., ICML 2019"
    Settings = AdapterSettings

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        s = self.settings
        freeze(model)
        if is_encoder(model):
            return self._apply_encoder(model, ctx)
        if family_of(model).name == "causal":  # after each decoder layer's attention and MLP blocks
            from energybench.methods.causal_support import attach_adapters

            generator = torch.Generator().manual_seed(ctx.seed)
            attach_adapters(model, s, lambda d: BottleneckAdapter(d, s.bottleneck, s.activation, s.init,
                                                                  s.init_std, generator), _adapt_output)
            return model
        sublayers = _sublayers(model, s.after_cross_attention)
        if not sublayers:
            raise ValueError(f"adapter: {type(model).__name__} has no SelfAttention/DenseReluDense sublayers; "
                             "the Houlsby adapter plugin supports T5-style encoder-decoders")
        d_model = model.config.d_model
        generator = torch.Generator().manual_seed(ctx.seed)
        ref = next(model.parameters())
        for _, module in sublayers:
            adapter = BottleneckAdapter(d_model, s.bottleneck, s.activation, s.init, s.init_std, generator)
            module.adapter = adapter.to(dtype=ref.dtype, device=ref.device)
            module.register_forward_hook(_adapt_output)
        if s.train_layer_norms:
            for name, p in model.named_parameters():
                if "layer_norm" in name:
                    p.requires_grad_(True)
        return model

    def _apply_encoder(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        """Houlsby's BERT placement: on the output of the attention output projection and of the FFN's second
        projection, before the layer's dropout, residual add and layer norm; the new head trains."""
        from energybench.models import encoder

        s = self.settings
        generator = torch.Generator().manual_seed(ctx.seed)
        ref = next(model.parameters())
        for _, proj in encoder.residual_projections(model):
            adapter = BottleneckAdapter(proj.out_features, s.bottleneck, s.activation, s.init, s.init_std, generator)
            proj.adapter = adapter.to(dtype=ref.dtype, device=ref.device)
            proj.register_forward_hook(_adapt_output)
        if s.train_layer_norms:
            for name, p in model.named_parameters():
                if "LayerNorm" in name:
                    p.requires_grad_(True)
        train_task_head(model)
        return model

    def describe(self, model: nn.Module) -> dict[str, Any]:
        names = [name for name, m in model.named_modules() if isinstance(m, BottleneckAdapter)]
        return {"bottleneck": self.settings.bottleneck, "adapters": len(names),
                "placement": sorted({n.split(".")[-2] for n in names})}
