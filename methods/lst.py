"""Ladder Side-Tuning (Sung, Cho, Bansal, NeurIPS 2022), on T5.

A small side T5 runs beside the frozen backbone and produces the output; the
backbone only feeds it, so nothing is back-propagated through the backbone
(it runs under ``torch.no_grad()``). Encoder family (BERT, RoBERTa, DeBERTa,
MiniLM): a side encoder at 1/r width up-projected into the trainable head,
see ``methods/lst_encoder.py``. Causal family (Llama, Qwen, Mistral, GPT-2):
a side decoder of the same architecture at 1/r width, through the frozen LM
head via an up-projection, see ``methods/lst_causal.py``. On T5:

- The side network is a T5 whose d_model, d_ff and d_kv are the backbone's
  divided by the reduction factor r; it keeps the head count, so heads still
  divide the reduced width (tiny-t5, r = 8: d 64 → 8, d_ff 128 → 16, d_kv 16 → 2).
- Its first state is a down-projection of the backbone's token embeddings;
  before side block i: μᵢ = σ(αᵢ / T), T = 0.1, αᵢ = 0 at start (μ = ½) and
  h_side ← μᵢ·h_side + (1 − μᵢ)·downᵢ(ϕᵢ), ϕᵢ the output of backbone block i.
- The side decoder cross-attends to the side encoder's output (after its
  final norm). Output: side final norm → Linear(d/r → d) → the backbone's
  d_model**-0.5 rescale when its config asks for it → the frozen LM head.
- Layer dropping: a side block (and its ladder) exists only for the backbone
  layers it is given. ``side_layers`` lists the layers that *keep* a side
  block, exactly as the authors' ``encoder_side_layers`` /
  ``decoder_side_layers`` do; ``drop_layers`` lists the layers that lose
  theirs (use one or the other). The authors' t5-base script passes
  ``[1,2,3,5,6,7,9,10,11]`` — 9 blocks kept, layers 0, 4 and 8 dropped — in
  both stacks: ``side_layers: [1, 2, 3, 5, 6, 7, 9, 10, 11]``, equivalently
  ``drop_layers: [0, 4, 8]`` (``AUTHORS_T5_BASE_SIDE_LAYERS``). The first
  kept block carries the relative-position bias.

Initialisation, as the authors' code does it (the defaults): the side blocks
and the side final norms are the backbone's, structurally pruned
(``init="pruned"``); the ladders (down-samplers, the first one included)
and the up-sampler keep ``nn.Linear``'s default initialisation
(``ladder_init="default"``). ``ladder_init="selection"`` is our earlier
form: the ladders start as the selection of the kept residual dimensions and
the up-projection as its transpose. ``init="random"`` keeps PyTorch's
default initialisation for the side blocks too.

Pruning: one set of d/r residual dimensions is kept for the whole side
network (each weight matrix touching the residual stream votes with its
column/row L1 norms, each matrix normalised to one vote); per block and per
head, the d_kv/r query-key and value-output dimensions with the largest L1
norms, and the d_ff/r feed-forward units with the largest L1 norms.

Deliberate difference from the paper: the authors rank what to keep by
Fisher information over 1024 training samples; that needs task data at
attach time, which the plugin contract does not give, so we prune by weight
magnitude (L1), the alternative their paper also discusses. There is no
setting that restores Fisher pruning; ``init="random"`` drops pruning.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from torch import nn
from transformers.modeling_outputs import Seq2SeqLMOutput

from energybench.methods.base import ApplyContext, Method, MethodSettings, freeze, is_encoder
from energybench.models.family import family_of
from energybench.methods.read import (block_outputs, check_t5_like, lm_loss, scale_decoder_outputs,
                                      side_network_inputs)


class LSTSettings(MethodSettings):
    reduction_factor: PositiveInt = Field(8, description="side widths are the backbone's d_model, d_ff, d_kv divided by this")
    gate_temperature: float = Field(0.1, gt=0, description="T in μ = σ(α/T)")
    gate_alpha_init: float = Field(0.0, description="initial α (0 gives μ = 0.5)")
    drop_layers: list[NonNegativeInt] = Field(
        default_factory=list, description="backbone layers whose side block is removed, in both stacks "
                                          "(authors' t5-base: [0, 4, 8]); not together with side_layers")
    side_layers: list[NonNegativeInt] | None = Field(
        None, description="backbone layers that keep a side block, in both stacks, as the authors' "
                          "encoder_side_layers/decoder_side_layers (t5-base: [1,2,3,5,6,7,9,10,11]); None: all "
                          "but drop_layers")
    init: Literal["pruned", "random"] = Field("pruned", description="side blocks and final norms from the magnitude-pruned backbone, or random")
    ladder_init: Literal["default", "selection"] = Field(
        "default", description="ladders and up-sampler: nn.Linear's default init (authors) or the selection of "
                               "the kept residual dimensions (needs init=pruned)")
    sampling_bias: bool = Field(True, description="biases on the down/up projections (authors' add_bias_sampling)")

    @model_validator(mode="after")
    def _check(self) -> "LSTSettings":
        if self.side_layers is not None and self.drop_layers:
            raise ValueError("lst: give side_layers (the layers kept) or drop_layers (the layers removed), not both")
        if self.side_layers is not None and not self.side_layers:
            raise ValueError("lst: side_layers is empty; at least one side block is needed")
        if self.ladder_init == "selection" and self.init != "pruned":
            raise ValueError("lst: ladder_init 'selection' selects the pruned residual dimensions; it needs init 'pruned'")
        return self

    def kept_layers(self, n: int, stack: str) -> list[int]:
        """The backbone layers (of an n-layer stack) that get a side block."""
        field_name, given = ("side_layers", self.side_layers) if self.side_layers is not None else ("drop_layers", self.drop_layers)
        bad = [i for i in given if i >= n]
        if bad:
            raise ValueError(f"lst: {field_name} {bad} out of range for the {n}-layer backbone {stack}")
        kept = sorted(set(given)) if self.side_layers is not None else [i for i in range(n) if i not in set(given)]
        if not kept:
            raise ValueError(f"lst: drop_layers removes every side block of the {stack}")
        return kept


# The authors' t5-base setting (their scripts' encoder_side_layers = decoder_side_layers): 9 side blocks per stack.
AUTHORS_T5_BASE_SIDE_LAYERS = [1, 2, 3, 5, 6, 7, 9, 10, 11]


def side_config(config, r: int, attn_implementation: str | None):
    """The backbone's T5 config with d_model, d_ff and d_kv divided by r."""
    for name in ("d_model", "d_ff", "d_kv"):
        if getattr(config, name) % r:
            raise ValueError(f"lst: reduction_factor {r} does not divide the backbone's {name} = {getattr(config, name)}")
    cfg = copy.deepcopy(config)
    cfg.d_model, cfg.d_ff, cfg.d_kv = config.d_model // r, config.d_ff // r, config.d_kv // r
    cfg.use_cache = False
    cfg._attn_implementation = attn_implementation or "eager"
    return cfg


class SideStack(nn.Module):
    """One side stack (encoder or decoder): first down-projection, ladders, gates, blocks, final norm."""

    def __init__(self, cfg, d_backbone: int, kept: list[int], is_decoder: bool, s: LSTSettings):
        super().__init__()
        from transformers.models.t5.modeling_t5 import T5Block, T5LayerNorm

        cfg = copy.deepcopy(cfg)
        cfg.is_decoder = is_decoder
        self.kept = list(kept)
        self.temperature = s.gate_temperature
        self.first_down = nn.Linear(d_backbone, cfg.d_model, bias=s.sampling_bias)
        self.downs = nn.ModuleList(nn.Linear(d_backbone, cfg.d_model, bias=s.sampling_bias) for _ in kept)
        self.alphas = nn.Parameter(torch.full((len(kept),), float(s.gate_alpha_init)))
        self.blocks = nn.ModuleList(T5Block(cfg, has_relative_attention_bias=(k == 0), layer_idx=k) for k in range(len(kept)))
        self.final_norm = T5LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def forward(self, embeds, backbone_states, self_mask, cross_states=None, cross_mask=None):
        h = self.first_down(self.dropout(embeds))
        gates = torch.sigmoid(self.alphas / self.temperature)
        bias = cross_bias = None
        for k, (block, down) in enumerate(zip(self.blocks, self.downs)):
            h = gates[k] * h + (1 - gates[k]) * down(backbone_states[self.kept[k]])
            h, bias, cross_bias = block(h, attention_mask=self_mask, position_bias=bias,
                                        encoder_hidden_states=cross_states, encoder_attention_mask=cross_mask,
                                        encoder_decoder_position_bias=cross_bias)
        return self.dropout(self.final_norm(h))


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A 0/1 "may attend" mask → additive float mask (0 or the dtype's minimum)."""
    return (1.0 - mask.to(dtype)) * torch.finfo(dtype).min


class LSTModel(nn.Module):
    """A frozen T5 plus the ladder side network; what the training loop trains."""

    def __init__(self, backbone: nn.Module, encoder: SideStack, decoder: SideStack, d_side: int, sampling_bias: bool):
        super().__init__()
        self.backbone = backbone
        self.side_encoder = encoder
        self.side_decoder = decoder
        self.up = nn.Linear(d_side, backbone.config.d_model, bias=sampling_bias)
        self.config = backbone.config
        self.kept_residual_dims: list[int] | None = None  # set by the pruning init

    @torch.no_grad()
    def _backbone_pass(self, stack: nn.Module, **kwargs) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Graph-free pass of one backbone stack: every block's output, and the stack's last hidden state."""
        with block_outputs(stack.block) as states:
            out = stack(**kwargs)
        return states, out.last_hidden_state

    def _side_encoding(self, input_ids, attention_mask, enc):
        """The side encoder's output over the backbone encoder's states, and the additive source mask."""
        with torch.no_grad():
            enc_emb = self.backbone.encoder.embed_tokens(input_ids)
        src_mask = _additive(attention_mask[:, None, None, :], enc_emb.dtype)
        return self.side_encoder(enc_emb, enc, src_mask), src_mask

    @torch.no_grad()
    def reusable_encoding(self, input_ids, attention_mask) -> dict:
        """Keyword arguments for :meth:`forward` that reuse one source pass (backbone encoder and side
        encoder) for every candidate label: rank classification, train/evaluate.py. Evaluation only."""
        enc, enc_last = self._backbone_pass(self.backbone.encoder, input_ids=input_ids, attention_mask=attention_mask)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "encoded": (enc_last, *self._side_encoding(input_ids, attention_mask, enc))}

    def forward(self, input_ids, attention_mask=None, labels=None, decoder_attention_mask=None,
                decoder_input_ids=None, encoded=None) -> Seq2SeqLMOutput:
        attention_mask, decoder_input_ids = side_network_inputs(self.backbone, "LST", input_ids, attention_mask,
                                                                labels, decoder_input_ids)
        bb = self.backbone
        if encoded is None:
            enc, enc_last = self._backbone_pass(bb.encoder, input_ids=input_ids, attention_mask=attention_mask)
        else:
            enc_last, side_enc, src_mask = encoded
        dec, _ = self._backbone_pass(bb.decoder, input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                                     encoder_hidden_states=enc_last, encoder_attention_mask=attention_mask,
                                     use_cache=False)
        if encoded is None:  # after the backbone's passes, as before: the random draws keep their order
            side_enc, src_mask = self._side_encoding(input_ids, attention_mask, enc)
        with torch.no_grad():
            dec_emb = bb.decoder.embed_tokens(decoder_input_ids)
        n = decoder_input_ids.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=input_ids.device).tril()
        tgt_keys = decoder_attention_mask if decoder_attention_mask is not None else torch.ones_like(decoder_input_ids)
        tgt_mask = _additive(causal[None, None] & tgt_keys[:, None, None, :].bool(), dec_emb.dtype)
        side_dec = self.side_decoder(dec_emb, dec, tgt_mask, cross_states=side_enc, cross_mask=src_mask)
        seq = self.up(side_dec)
        if scale_decoder_outputs(self.config):
            seq = seq * (self.config.d_model ** -0.5)
        logits = self.backbone.lm_head(seq)
        return Seq2SeqLMOutput(loss=lm_loss(logits, labels), logits=logits)


# ---------------------------------------------------------------- pruning init

def _l1_cols(w: torch.Tensor) -> torch.Tensor:
    """Per input dimension L1 norm, normalised so that the matrix casts one vote."""
    v = w.abs().sum(0)
    return v / v.sum()


def _l1_rows(w: torch.Tensor) -> torch.Tensor:
    v = w.abs().sum(1)
    return v / v.sum()


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(k).indices.sort().values


def _attn_modules(block) -> list:
    return [sub for layer in block.layer for sub in layer.children() if hasattr(sub, "q")]


def _ff(block):
    return block.layer[-1].DenseReluDense


def _ff_in(ff) -> list[torch.Tensor]:
    return [ff.wi.weight] if hasattr(ff, "wi") else [ff.wi_0.weight, ff.wi_1.weight]


def residual_importance(backbone: nn.Module) -> torch.Tensor:
    """One score per residual dimension: every matrix reading or writing the residual stream votes once."""
    votes = [_l1_cols(backbone.shared.weight)]
    for stack in (backbone.encoder, backbone.decoder):
        for block in stack.block:
            for att in _attn_modules(block):
                votes += [_l1_cols(att.q.weight), _l1_cols(att.k.weight), _l1_cols(att.v.weight), _l1_rows(att.o.weight)]
            ff = _ff(block)
            votes += [_l1_cols(w) for w in _ff_in(ff)] + [_l1_rows(ff.wo.weight)]
    return torch.stack(votes).sum(0)


def _per_head_top(scores: torch.Tensor, heads: int, keep: int) -> torch.Tensor:
    per_head = scores.reshape(heads, -1)
    idx = per_head.topk(keep, dim=1).indices.sort(dim=1).values
    return (idx + torch.arange(heads, device=idx.device)[:, None] * per_head.shape[1]).reshape(-1)


@torch.no_grad()
def _prune_attention(src, dst, keep_res: torch.Tensor, heads: int, keep_kv: int) -> None:
    q, k, v = (w[:, keep_res] for w in (src.q.weight, src.k.weight, src.v.weight))
    o = src.o.weight[keep_res]
    qk = _per_head_top(q.abs().sum(1) + k.abs().sum(1), heads, keep_kv)
    vo = _per_head_top(v.abs().sum(1) + o.abs().sum(0), heads, keep_kv)
    dst.q.weight.copy_(q[qk])
    dst.k.weight.copy_(k[qk])
    dst.v.weight.copy_(v[vo])
    dst.o.weight.copy_(o[:, vo])


@torch.no_grad()
def _prune_block(src, dst, keep_res: torch.Tensor, heads: int, keep_kv: int, keep_ff: int) -> None:
    for s_att, d_att in zip(_attn_modules(src), _attn_modules(dst)):
        _prune_attention(s_att, d_att, keep_res, heads, keep_kv)
    for s_layer, d_layer in zip(src.layer, dst.layer):
        d_layer.layer_norm.weight.copy_(s_layer.layer_norm.weight[keep_res])
    s_ff, d_ff = _ff(src), _ff(dst)
    ins = [w[:, keep_res] for w in _ff_in(s_ff)]
    wo = s_ff.wo.weight[keep_res]
    units = _top(sum(w.abs().sum(1) for w in ins) + wo.abs().sum(0), keep_ff)
    for w_dst, w_src in zip(_ff_in(d_ff), ins):
        w_dst.copy_(w_src[units])
    d_ff.wo.weight.copy_(wo[:, units])


@torch.no_grad()
def _select_init(linear: nn.Linear, keep_res: torch.Tensor, transpose: bool = False) -> None:
    """Selection of the kept residual dimensions (or its transpose for the up-projection)."""
    linear.weight.zero_()
    rows = torch.arange(len(keep_res))
    if transpose:
        linear.weight[keep_res, rows] = 1.0
    else:
        linear.weight[rows, keep_res] = 1.0
    if linear.bias is not None:
        linear.bias.zero_()


def init_from_pruned_backbone(model: LSTModel, backbone: nn.Module, cfg, selection: bool = False) -> list[int]:
    """Copy the magnitude-pruned backbone into the side blocks and final norms; the kept residual dimensions.

    ``selection``: also start the ladders as the selection of the kept dimensions and the up-sampler as its
    transpose (``ladder_init="selection"``); otherwise they keep nn.Linear's default init, as the authors'.
    """
    keep_res = _top(residual_importance(backbone), cfg.d_model).cpu()
    heads = cfg.num_heads
    for side, stack in ((model.side_encoder, backbone.encoder), (model.side_decoder, backbone.decoder)):
        for i, block in zip(side.kept, side.blocks):
            _prune_block(stack.block[i], block, keep_res, heads, cfg.d_kv, cfg.d_ff)
        first = side.blocks[0].layer[0].SelfAttention
        with torch.no_grad():
            first.relative_attention_bias.weight.copy_(stack.block[0].layer[0].SelfAttention.relative_attention_bias.weight)
            side.final_norm.weight.copy_(stack.final_layer_norm.weight[keep_res])
        if selection:
            for lin in [side.first_down, *side.downs]:
                _select_init(lin, keep_res)
    if selection:
        _select_init(model.up, keep_res, transpose=True)
    return keep_res.tolist()


class LadderSideTuning(Method):
    name = "lst"
    summary = "a 1/r-width side T5 fed by gated ladders from the frozen backbone; no backprop through it"
    paper = "Sung, Cho, Bansal, NeurIPS 2022"
    Settings = LSTSettings

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        if is_encoder(model):  # a side encoder into the classification head: methods/lst_encoder.py
            from energybench.methods.lst_encoder import apply_lst_encoder

            return apply_lst_encoder(model, self.settings, ctx.seed)
        if family_of(model).name == "causal":  # a side decoder into the frozen LM head: methods/lst_causal.py
            from energybench.methods.lst_causal import apply_lst_causal

            return apply_lst_causal(model, self.settings, ctx.seed)
        check_t5_like(model, "LST")
        s = self.settings
        if s.init == "pruned" and model.shared.weight.is_meta:  # said before the side network is built for nothing
            raise NotImplementedError("init: pruned reads the backbone's weights, and a meta tensor has none "
                                      "(init: random builds the same shapes)")
        freeze(model)
        cfg = side_config(model.config, s.reduction_factor, model.config._attn_implementation)
        kept = {name: s.kept_layers(len(stack.block), name)
                for name, stack in (("encoder", model.encoder), ("decoder", model.decoder))}
        d = model.config.d_model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            wrapper = LSTModel(model, SideStack(cfg, d, kept["encoder"], False, s),
                               SideStack(cfg, d, kept["decoder"], True, s), cfg.d_model, s.sampling_bias)
        wrapper.kept_residual_dims = (init_from_pruned_backbone(wrapper, model, cfg, s.ladder_init == "selection")
                                      if s.init == "pruned" else None)
        p = next(model.parameters())
        for module in (wrapper.side_encoder, wrapper.side_decoder, wrapper.up):
            module.to(device=p.device, dtype=p.dtype)
        return wrapper

    def describe(self, model: nn.Module) -> dict[str, Any]:
        s = self.settings
        if not hasattr(model, "side_encoder"):  # encoder and causal families
            return {"reduction_factor": s.reduction_factor, "drop_layers": list(s.drop_layers), "init": "random",
                    "side_layers": list(model.kept)}
        return {"reduction_factor": s.reduction_factor, "drop_layers": list(s.drop_layers),
                "side_layers": None if s.side_layers is None else list(s.side_layers), "init": s.init,
                "ladder_init": s.ladder_init,
                "pruning": "L1 magnitude (authors: Fisher)" if s.init == "pruned" else None,
                "side_encoder_layers": list(model.side_encoder.kept), "side_decoder_layers": list(model.side_decoder.kept)}
