"""LST on the encoder family (BERT, RoBERTa, DeBERTa, MiniLM): a 1/r-width side encoder fed by gated ladders.

The closest faithful reading of Ladder Side-Tuning (Sung, Cho, Bansal,
NeurIPS 2022) for an encoder with a classification head:

- the side network is an encoder of the backbone's own architecture (its
  base-model class, built from a copy of the config) with ``hidden_size``
  and ``intermediate_size`` divided by r and the head count kept (heads must
  divide the reduced width; MiniLM-L6, r = 8: 384 → 48, 1536 → 192, 12 heads
  of 4). Its word-embedding table is not used (vocabulary 1, frozen): the
  side's input is a down-projection of the backbone's embedding output,
  which then passes the side's own position/type embeddings and LayerNorm;
- before side layer k: μ_k = σ(α_k / T), h ← μ_k·h + (1 − μ_k)·down_k(ϕ_k),
  ϕ_k the output of backbone layer k (every layer unless ``drop_layers``);
- the side's last state is up-projected (d/r → d) and goes through the
  backbone's pooler (frozen) into the trainable classification head, with
  the model's own loss (``energybench.models.encoder.head_forward``);
- the backbone runs under ``torch.no_grad()``: nothing back-propagates
  through it. Trainable: the side encoder, the ladders and gates, the
  up-projection and the head.

Initialisation is random (transformers' own init of the side encoder,
PyTorch's of the projections); the T5 path's magnitude-pruned
initialisation is not defined here yet, so ``init: pruned`` set explicitly
on an encoder is refused.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def side_config(config, r: int):
    """The backbone's config with hidden and intermediate sizes divided by r (same layer count and heads)."""
    for name in ("hidden_size", "intermediate_size"):
        if getattr(config, name) % r:
            raise ValueError(f"lst: reduction_factor {r} does not divide the backbone's {name} = {getattr(config, name)}")
    cfg = copy.deepcopy(config)
    cfg.hidden_size, cfg.intermediate_size = config.hidden_size // r, config.intermediate_size // r
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ValueError(f"lst: the side width {cfg.hidden_size} (hidden_size / {r}) is not a multiple of the "
                         f"{cfg.num_attention_heads} attention heads; choose another reduction_factor")
    if hasattr(cfg, "embedding_size"):
        cfg.embedding_size = cfg.hidden_size
    if hasattr(cfg, "pooler_hidden_size"):
        cfg.pooler_hidden_size = cfg.hidden_size
    cfg.vocab_size, cfg.pad_token_id = 1, 0
    return cfg


class LadderLayer(nn.Module):
    """A side layer preceded by its gated ladder: h ← μ·h + (1 − μ)·down(ϕ)."""

    def __init__(self, layer: nn.Module, down: nn.Linear):
        super().__init__()
        self.layer = layer
        self.down = down
        self.ladder_input: torch.Tensor | None = None  # ϕ_k and μ_k, set by LSTEncoderModel for one forward
        self.gate: torch.Tensor | None = None

    def forward(self, hidden_states, *args, **kwargs):
        hidden_states = self.gate * hidden_states + (1 - self.gate) * self.down(self.ladder_input)
        return self.layer(hidden_states, *args, **kwargs)


class LSTEncoderModel(nn.Module):
    """A frozen encoder, the ladder side encoder, and the up-projection into the head; what the loop trains."""

    def __init__(self, backbone: nn.Module, side: nn.Module, kept: list[int], temperature: float,
                 alpha_init: float, sampling_bias: bool):
        super().__init__()
        d, d_side = backbone.config.hidden_size, side.config.hidden_size
        self.backbone = backbone
        self.side = side
        self.kept = list(kept)
        self.temperature = temperature
        self.first_down = nn.Linear(d, d_side, bias=sampling_bias)
        self.alphas = nn.Parameter(torch.full((len(kept),), float(alpha_init)))
        stack = side.encoder.layer
        for k in range(len(stack)):
            stack[k] = LadderLayer(stack[k], nn.Linear(d, d_side, bias=sampling_bias))
        self.up = nn.Linear(d_side, d, bias=sampling_bias)
        self.config = backbone.config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        from energybench.models import encoder

        states = encoder.layer_states(self.backbone, input_ids, attention_mask, token_type_ids)  # no graph
        gates = torch.sigmoid(self.alphas / self.temperature)
        ladders = list(self.side.encoder.layer)
        for k, ladder in enumerate(ladders):
            ladder.ladder_input, ladder.gate = states[self.kept[k] + 1], gates[k]
        try:
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            side = self.side(inputs_embeds=self.first_down(states[0]), attention_mask=attention_mask,
                             return_dict=True, **kwargs).last_hidden_state
        finally:
            for ladder in ladders:
                ladder.ladder_input = ladder.gate = None
        return encoder.head_forward(self.backbone, self.up(side), attention_mask, labels)


def apply_lst_encoder(model: nn.Module, s, seed: int) -> LSTEncoderModel:
    """Freeze ``model``, build its side encoder (settings ``s``: LSTSettings), train the head."""
    from energybench.methods.base import freeze, train_task_head
    from energybench.models import encoder

    if "init" in s.model_fields_set and s.init == "pruned":
        raise ValueError("lst: init 'pruned' is defined for T5 backbones only; on encoders use init: random")
    freeze(model)
    n = len(encoder.layers(model))
    kept = s.kept_layers(n, "encoder")  # side_layers (kept) or drop_layers, as on T5
    cfg = side_config(model.config, s.reduction_factor)
    cfg.num_hidden_layers = len(kept)
    base_cls = type(model.base_model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            side = base_cls(cfg, add_pooling_layer=False)
        except TypeError:  # base models without a pooler option (DeBERTa-v2)
            side = base_cls(cfg)
        wrapper = LSTEncoderModel(model, side, kept, s.gate_temperature, s.gate_alpha_init, s.sampling_bias)
    side.embeddings.word_embeddings.weight.requires_grad_(False)  # unused: the side reads inputs_embeds
    train_task_head(model)
    p = next(model.parameters())
    for module in (wrapper.side, wrapper.first_down, wrapper.up):
        module.to(device=p.device, dtype=p.dtype)
    wrapper.alphas.data = wrapper.alphas.data.to(device=p.device)
    return wrapper
