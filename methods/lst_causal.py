"""LST on the decoder-only ``causal`` family (Llama, Qwen, Mistral, Phi, GPT-2): a 1/r-width side decoder.

The reading of Ladder Side-Tuning (Sung, Cho, Bansal, NeurIPS 2022) for a
decoder-only LM:

- the side network is a decoder of the backbone's own architecture (its
  base-model class, ``LlamaModel`` / ``GPT2Model`` …, built from a copy of the
  config) with the hidden and MLP widths divided by r and the head counts
  kept (head_dim = side width / heads; tiny-llama, r = 8: 64 → 8 wide, MLP
  128 → 16, 4 query and 2 key/value heads of 2). Its word-embedding table is
  not used (vocabulary 1, frozen): its input is a down-projection of the
  backbone's token embeddings, which then takes the side's own position
  handling (rotary on Llama, learned positions on GPT-2);
- before side layer k: μ_k = σ(α_k / T), h ← μ_k·h + (1 − μ_k)·down_k(ϕ_k),
  ϕ_k the raw output of backbone layer k (before the final norm; every
  layer unless ``drop_layers``), applied by a forward pre-hook on the side
  layer so the side model's own forward (masks, positions) runs unchanged;
- the side's last state (after the side's own final norm) is up-projected
  (d/r → d) into the backbone's frozen LM head; the loss is the causal LM's
  shifted cross-entropy over the continuation labels;
- the backbone runs under ``torch.no_grad()``: nothing back-propagates
  through it. Trainable: the side decoder, the ladders and gates, the
  up-projection.

Initialisation is random (transformers' init of the side decoder, PyTorch's
of the projections); the T5 path's magnitude-pruned initialisation is not
defined here, so ``init: pruned`` set explicitly on a causal LM is refused.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutput


def side_config(config, r: int):
    """The backbone's config with hidden and MLP widths divided by r (same layers, same head counts)."""
    cfg = copy.deepcopy(config)
    widths = ["hidden_size"] + [a for a in ("intermediate_size", "n_inner") if getattr(config, a, None)]
    for name in widths:
        if getattr(config, name) % r:
            raise ValueError(f"lst: reduction_factor {r} does not divide the backbone's {name} = {getattr(config, name)}")
        setattr(cfg, name, getattr(config, name) // r)
    heads = cfg.num_attention_heads
    if cfg.hidden_size % heads:
        raise ValueError(f"lst: the side width {cfg.hidden_size} (hidden_size / {r}) is not a multiple of the "
                         f"{heads} attention heads; choose another reduction_factor")
    if getattr(cfg, "head_dim", None):
        cfg.head_dim = cfg.hidden_size // heads
    cfg.vocab_size, cfg.pad_token_id = 1, 0
    cfg.tie_word_embeddings = False
    cfg.use_cache = False
    return cfg


class LSTCausalModel(nn.Module):
    """A frozen causal LM, the ladder side decoder, and the up-projection into its LM head; what the loop trains."""

    def __init__(self, backbone: nn.Module, side: nn.Module, kept: list[int], temperature: float,
                 alpha_init: float, sampling_bias: bool):
        from energybench.models import causal

        super().__init__()
        d, d_side = backbone.config.hidden_size, side.config.hidden_size
        self.backbone = backbone
        self.side = side
        self.kept = list(kept)
        self.temperature = temperature
        self.first_down = nn.Linear(d, d_side, bias=sampling_bias)
        self.downs = nn.ModuleList(nn.Linear(d, d_side, bias=sampling_bias) for _ in kept)
        self.alphas = nn.Parameter(torch.full((len(kept),), float(alpha_init)))
        self.up = nn.Linear(d_side, d, bias=sampling_bias)
        self.config = backbone.config
        self._ladder: list[torch.Tensor] | None = None  # per side layer: μ_k·h + (1 − μ_k)·down_k(ϕ_k) inputs
        for k, layer in enumerate(causal.layers(side)):
            layer.register_forward_pre_hook(self._make_hook(k), with_kwargs=True)

    def _make_hook(self, k: int):
        def hook(_module, args, kwargs):
            if self._ladder is None:
                return None
            gate, rung = self._ladder[k]
            if args:
                return (gate * args[0] + (1 - gate) * rung, *args[1:]), kwargs
            kwargs["hidden_states"] = gate * kwargs["hidden_states"] + (1 - gate) * rung
            return args, kwargs
        return hook

    def forward(self, input_ids, attention_mask=None, labels=None) -> CausalLMOutput:
        from energybench.models import causal

        embeds, states = causal.layer_states(self.backbone, input_ids, attention_mask)  # no graph
        gates = torch.sigmoid(self.alphas / self.temperature)
        self._ladder = [(gates[k], down(states[i])) for k, (i, down) in enumerate(zip(self.kept, self.downs))]
        try:
            side = self.side(inputs_embeds=self.first_down(embeds), attention_mask=attention_mask,
                             use_cache=False, return_dict=True).last_hidden_state
        finally:
            self._ladder = None
        logits = causal.lm_head(self.backbone)(self.up(side))
        return CausalLMOutput(loss=causal.shifted_lm_loss(logits, labels), logits=logits)


def apply_lst_causal(model: nn.Module, s, seed: int) -> LSTCausalModel:
    """Freeze ``model`` and build its side decoder (settings ``s``: LSTSettings)."""
    from energybench.methods.base import freeze
    from energybench.models import causal

    if "init" in s.model_fields_set and s.init == "pruned":
        raise ValueError("lst: init 'pruned' is defined for T5 backbones only; on causal LMs use init: random")
    freeze(model)
    n = len(causal.layers(model))
    kept = s.kept_layers(n, "decoder")  # side_layers (kept) or drop_layers, as on T5
    cfg = side_config(model.config, s.reduction_factor)
    cfg.num_hidden_layers = len(kept)
    if getattr(cfg, "layer_types", None):  # Qwen2/3, Mistral: per-layer attention kinds follow the kept layers
        cfg.layer_types = [cfg.layer_types[i] for i in kept]
    base_cls = type(causal.decoder(model))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        side = base_cls(cfg)
        wrapper = LSTCausalModel(model, side, kept, s.gate_temperature, s.gate_alpha_init, s.sampling_bias)
    side.get_input_embeddings().weight.requires_grad_(False)  # unused: the side reads inputs_embeds
    p = next(model.parameters())
    for module in (wrapper.side, wrapper.first_down, wrapper.downs, wrapper.up):
        module.to(device=p.device, dtype=p.dtype)
    wrapper.alphas.data = wrapper.alphas.data.to(device=p.device)
    return wrapper
