"""Dynamic-rank DoRA (Mao et al., ACL 2024): LoRA split into gated rank-one components, pruned by importance.

Not to be confused with the weight-decomposed DoRA (``dora``). No library
implements this method, so it is written here from the paper (§3) and the
authors' public code (github.com/MIkumikumi0116/DoRA), whose defaults we take.

The math, per adapted ``nn.Linear`` (weight W0, r' = ``init_r`` components):

- forward: ``W0·x + (α/r')·B·(c ⊙ A·dropout(x))`` with A (r'×in) rows Aᵢ,
  B (out×r') columns Bᵢ and gates c (r'). A and B are kaiming-uniform, c = 0,
  so the model *is* the backbone at initialisation (ΔW = 0 exactly) and A, B
  receive no task gradient until c moves.
- importance: sᵢ = ‖Bᵢ·Aᵢ·cᵢ‖_F / ‖Σⱼ Bⱼ·Aⱼ·cⱼ‖_F (the scale α/r' cancels),
  smoothed s̃ ← β·s̃ + (1−β)·s every step. A component with cᵢ = 0 has sᵢ = 0;
  a matrix whose whole update is 0 gives every component sᵢ = 0 (we do not
  divide by zero; the authors add ε = 1e-8 to the denominator instead).
- budget b(t) (mean live components per matrix): r' before t_i; the paper's
  cubic b(0) − (b(0) − b(T))·((t − t_i)/(t_f − t_i))³ between t_i and t_f
  (t_f = the step where pruning ends); r after. See ``budget_schedule``.
- pruning is global: at a prune event the n·r' components of all n adapted
  matrices are ranked by s̃ and all but the top ``n·r' − ⌊n·(r' − b(t))⌋``
  get cᵢ = 0 (ties broken by position, deterministically). At t_f exactly
  n·r components are kept.
- soft pruning (paper §3.3): a pruned component keeps Aᵢ, Bᵢ; only cᵢ is set
  to 0. There is no permanent mask while pruning is under way: the optimiser
  may move cᵢ again (it receives gradient through the kept Aᵢ, Bᵢ), and the
  component recovers unless a later event prunes it again (with AdamW the
  next step's momentum always moves it off 0; the next event decides).
  After the last event (t > t_f) the distribution is fixed, as the paper says ("fixes the
  component distribution in the last steps"): the components pruned at t_f
  are put back to cᵢ = 0 after every optimiser step (the authors' code does
  the same with its ``finally_mask_dict``). The smoothed importance is no
  longer updated then.
- DEM regulariser (paper §3.4): R = (1/n)·Σᵢ (Var(Aᵢ) + Var(Bᵢ)) over all n
  components of all matrices, Var the unbiased (Bessel-corrected) variance of
  the entries of the vector, weighted by η. The authors' code divides by 2n
  instead of n (i.e. its η is effectively halved) and switches the term off
  once pruning has ended; we follow the paper's normalisation and the code's
  switch-off (``dem_after_pruning=False``; set True to keep it all run).

Steps are 1-based, as the training loop passes them to ``on_step_end`` (the
number of optimiser steps done). t_i = ⌊0.15·T⌋ and t_f = max(1, ⌊0.5·T⌋),
so every run of T ≥ 1 steps reaches its final event. Prune events happen at
t_i, every ``interval`` steps after it, and at t_f. The authors prune every
100 steps; a short run would then jump from r' to r in one event, so the
interval used is ``min(prune_interval_steps, max(1, (t_f − t_i) // 10))`` —
about ten events or more in any run, 100 steps on runs of ≥ ~2,900 steps. Compute and memory
stay at r' for the whole run (pruning zeroes gates, it does not shrink A, B).
Only states from step t_f on may become the loop's best validation checkpoint
(``checkpoint_allowed``; evaluations before it do not count towards patience
either), so the model restored, evaluated and described after training has
the final budget of n·r live components; ``describe`` counts the live gates
of those weights.
``for_inference`` folds W0 + (α/r')·B·diag(c)·A into a plain ``nn.Linear``.

Memory of the low-rank path (``recompute_dropout``, default True). Written
plainly, ``F.linear(dropout(x), A)`` materialises dropout(x) once per adapted
module and autograd keeps that copy (for A's gradient) plus the float
dropout mask — e.g. the encoder output copied twice per decoder layer for the
cross-attention k and v. That is the implementation's cost, not the method's:
x is saved anyway by the frozen base projection. ``DropoutLowRank`` (a
``torch.autograd.Function``) saves x and a 1-byte (bool) mask instead and
recomputes the dropped input in backward. Each module draws its own mask
(the paper's per-module dropout), through ``torch.native_dropout``, the
kernel ``F.dropout`` itself uses, so with the same seed the masks, the
forward and the gradients are bit-identical to the plain form
(``recompute_dropout=False``, kept for comparison; the tests check both).

Encoder family: the same six matrix types of every layer (query, key,
value, attention output, intermediate, output on BERT), found through
``energybench.models.encoder`` rather than by attribute name (BERT calls
three of them ``dense``); the new classification head trains as well.

Causal family (Llama, Qwen, Mistral, GPT-2): every weight matrix of every
decoder layer, q, k, v, o and the MLP projections (Llama's q_proj … down_proj,
GPT-2's c_attn, c_proj, c_fc with its ``Conv1D`` turned into an equivalent
``nn.Linear``); see ``methods/causal_support.py``. ``target_modules`` set in
the suite selects by name suffix.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from energybench.methods.base import ApplyContext, Method, MethodSettings, freeze, is_encoder, train_task_head
from energybench.models.family import family_of


class DyDoRASettings(MethodSettings):
    r: PositiveInt = Field(8, description="target budget b(T): mean live components per matrix after pruning")
    init_r: PositiveInt | None = Field(
        None, description="initial budget b(0) = components per matrix r'; None means ceil(1.5·r) (authors' code)")
    alpha: float = Field(8.0, gt=0, description="scaling numerator: the update is scaled by alpha/init_r")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the input of the low-rank path")
    beta: float = Field(0.9, ge=0, lt=1, description="EMA factor of the importance score")
    dem_weight: float = Field(0.1, ge=0, description="η, weight of the DEM variance regulariser; 0 disables it")
    dem_after_pruning: bool = Field(
        False, description="keep the DEM term after pruning ends (authors' code: False, switched off)")
    prune_start_fraction: float = Field(0.15, ge=0, lt=1, description="t_i / T: pruning starts")
    prune_end_fraction: float = Field(0.5, gt=0, le=1, description="t_f / T: pruning ends, budget fixed at r after")
    prune_interval_steps: PositiveInt = Field(
        100, description="steps between prune events (shortened on short runs, see module docstring)")
    recompute_dropout: bool = Field(
        True, description="save x and a 1-byte mask and recompute dropout(x) in backward (same gradients, less "
                          "memory); False: the plain dropout → F.linear path, which saves the dropped copy")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q", "k", "v", "o", "wi", "wo"], min_length=1,
        description="names of the nn.Linear attributes to adapt (T5: attention q,k,v,o and FFN wi, wo; "
                    "'wi' also covers the gated wi_0, wi_1)")

    @model_validator(mode="after")
    def _check(self) -> "DyDoRASettings":
        if self.init_r is not None and self.init_r < self.r:
            raise ValueError(f"init_r ({self.init_r}) must be >= r ({self.r}): pruning only removes components")
        if self.prune_end_fraction < self.prune_start_fraction:
            raise ValueError(f"prune_end_fraction ({self.prune_end_fraction}) must be >= "
                             f"prune_start_fraction ({self.prune_start_fraction})")
        return self

    @property
    def initial_rank(self) -> int:
        return self.init_r if self.init_r is not None else math.ceil(1.5 * self.r)


def budget_schedule(t: int, total_steps: int, init_r: float, target_r: float, t_i: int, t_f: int) -> float:
    """b(t), the mean number of live components per matrix after step t (paper §3.3).

    b(0) = init_r for t < t_i; init_r − (init_r − target_r)·((t − t_i)/(t_f − t_i))³
    for t_i ≤ t ≤ t_f; target_r for t > t_f (up to total_steps). When t_f == t_i the
    cubic phase is a single step and b(t_i) = target_r.
    """
    if not 0 <= t_i <= t_f <= total_steps:
        raise ValueError(f"budget_schedule needs 0 <= t_i <= t_f <= total_steps, got t_i={t_i}, t_f={t_f}, "
                         f"total_steps={total_steps}")
    if t < t_i:
        return float(init_r)
    if t > t_f or t_f == t_i:
        return float(target_r)
    progress = (t - t_i) / (t_f - t_i)
    return init_r - (init_r - target_r) * progress ** 3


def prune_schedule(total_steps: int, start_fraction: float = 0.15, end_fraction: float = 0.5,
                   interval_steps: int = 100) -> tuple[int, int, int]:
    """(t_i, t_f, interval) for a run of ``total_steps`` 1-based steps."""
    t_f = max(1, int(end_fraction * total_steps))
    t_i = min(int(start_fraction * total_steps), t_f)
    interval = min(interval_steps, max(1, (t_f - t_i) // 10))
    return t_i, t_f, interval


class DropoutLowRank(torch.autograd.Function):
    """A·dropout(x) for training, saving x and the bool dropout mask rather than the dropped copy.

    Forward and gradients equal ``F.linear(F.dropout(x, p, True), A)`` bit for bit under the same RNG state:
    the mask comes from ``torch.native_dropout`` (what ``F.dropout`` runs on CUDA; on the CPU it draws the same
    mask and computes the same values), the dropped input is recomputed in backward by
    ``native_dropout_backward`` (x·mask·scale, the forward's own arithmetic), and the two matrix products are the
    ones autograd takes for F.linear (gradient of the input: g·A, of the weight: gᵀ·dropped). Under autocast the
    gradient may be in a lower precision than x or A; each product then runs in the gradient's dtype and the
    result is cast back to its input's dtype.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, p: float) -> torch.Tensor:
        dropped, mask = torch.native_dropout(x, p, True)
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(x, mask, a)
        return F.linear(dropped, a)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, mask, a = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_a = None
        if ctx.needs_input_grad[0]:
            grad_dropped = g2.mm(a.to(g2.dtype)).view(*x.shape[:-1], a.shape[1])
            grad_x = torch.ops.aten.native_dropout_backward(grad_dropped, mask, ctx.scale).to(x.dtype)
        if ctx.needs_input_grad[1]:
            dropped = torch.ops.aten.native_dropout_backward(x, mask, ctx.scale)
            grad_a = g2.t().mm(dropped.reshape(-1, x.shape[-1]).to(g2.dtype)).to(a.dtype)
        return grad_x, grad_a, None


class DyDoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus r' gated rank-one components (Aᵢ, Bᵢ, cᵢ)."""

    def __init__(self, base: nn.Linear, init_r: int, alpha: float, dropout: float,
                 generator: torch.Generator | None = None, recompute_dropout: bool = True):
        super().__init__()
        self.base = base
        self.recompute_dropout = recompute_dropout
        self.init_r = init_r
        self.scaling = alpha / init_r
        a = torch.empty(init_r, base.in_features)
        b = torch.empty(base.out_features, init_r)
        # kaiming-uniform (a=0, fan_in) on A (r'×in) and B (out×r'), as the authors' nn.Linear weights.
        nn.init.kaiming_uniform_(a, generator=generator)
        nn.init.kaiming_uniform_(b, generator=generator)
        kw = dict(dtype=base.weight.dtype, device=base.weight.device)
        self.dydora_A = nn.Parameter(a.to(**kw))
        self.dydora_B = nn.Parameter(b.to(**kw))
        self.dydora_c = nn.Parameter(torch.zeros(init_r, **kw))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Buffers so that the loop's best-state snapshot/restore and .to(device) carry them.
        self.register_buffer("importance_ema", torch.zeros(init_r, dtype=torch.float32, device=base.weight.device))
        self.register_buffer("pruned", torch.zeros(init_r, dtype=torch.bool, device=base.weight.device))

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (T5's feed-forward block reads ``wo.weight.dtype``)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = getattr(self.dropout, "p", 0.0)
        if self.recompute_dropout and self.training and p > 0 and torch.is_grad_enabled():
            low = DropoutLowRank.apply(x, self.dydora_A, p)
        else:
            low = F.linear(self.dropout(x), self.dydora_A)
        low = low * self.dydora_c
        return self.base(x) + F.linear(low, self.dydora_B) * self.scaling

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        """(α/r')·B·diag(c)·A, shaped like the base weight (out×in)."""
        return (self.dydora_B * self.dydora_c) @ self.dydora_A * self.scaling

    @torch.no_grad()
    def raw_importance(self) -> torch.Tensor:
        """sᵢ = ‖cᵢ·Bᵢ·Aᵢ‖_F / ‖B·diag(c)·A‖_F, 0 for every component when the update is 0.

        ‖cᵢ·Bᵢ·Aᵢ‖_F = |cᵢ|·‖Aᵢ‖·‖Bᵢ‖ (rank one). The denominator uses
        ‖B·D·A‖_F² = Σᵢⱼ cᵢcⱼ(BᵀB)ᵢⱼ(AAᵀ)ᵢⱼ, r'×r' Gram matrices instead of the
        out×in product, so the per-step cost does not grow with in·out.
        """
        a, b, c = self.dydora_A.float(), self.dydora_B.float(), self.dydora_c.float()
        component = c.abs() * a.norm(dim=1) * b.norm(dim=0)
        total_sq = (torch.outer(c, c) * (b.T @ b) * (a @ a.T)).sum().clamp_min(0)
        total = total_sq.sqrt()
        # torch.where instead of `if total == 0`: no host-device sync per matrix per step.
        return torch.where(total > 0, component / torch.where(total > 0, total, torch.ones_like(total)),
                           torch.zeros_like(component))

    def live_count(self) -> int:
        return int((self.dydora_c != 0).sum())


def _is_target(attr_name: str, targets: list[str]) -> bool:
    return any(attr_name == t or re.fullmatch(rf"{re.escape(t)}_\d+", attr_name) for t in targets)


def _encoder_targets(model: nn.Module, s: DyDoRASettings) -> list[tuple[nn.Module, str]]:
    """Encoder family: (parent, attribute) of the six matrix types Wq, Wk, Wv, Wo, Wf1, Wf2 of every layer.

    As in the paper's GLUE runs on RoBERTa/DeBERTa. ``target_modules`` set in
    the suite selects by layer-relative name suffix (``attention.self.query``,
    ``intermediate.dense``…); the head and pooler are never adapted.
    """
    from energybench.models import encoder

    targets = list(s.target_modules) if "target_modules" in s.model_fields_set else None
    return [(parent, attr) for parent, attr, _ in encoder.matrix_modules(model, targets)]


def dydora_layers(model: nn.Module) -> dict[str, DyDoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, DyDoRALinear)}


class DyDoRA(Method):
    name = "dydora"
    summary = "dynamic-rank DoRA: gated rank-one LoRA components, globally pruned by importance to rank r"
    paper = "Mao et al., ACL 2024"
    Settings = DyDoRASettings

    def __init__(self, settings: DyDoRASettings | None = None):
        super().__init__(settings)
        self._last_step = 0
        self._t_f: int | None = None

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        s = self.settings
        freeze(model)
        generator = torch.Generator().manual_seed(ctx.seed)
        if is_encoder(model):
            targets = _encoder_targets(model, s)
            train_task_head(model)
        elif family_of(model).name == "causal":  # q, k, v, o and the MLP projections of every decoder layer
            from energybench.methods.causal_support import dydora_targets

            targets = dydora_targets(model, s)
        else:
            targets = [(parent, attr) for parent in model.modules() for attr, child in parent.named_children()
                       if isinstance(child, nn.Linear) and _is_target(attr, s.target_modules)]
        if not targets:
            raise ValueError(f"dydora: no nn.Linear named {s.target_modules} in {type(model).__name__}; "
                             "set target_modules to the names of the projections to adapt")
        for parent, attr in targets:
            setattr(parent, attr, DyDoRALinear(getattr(parent, attr), s.initial_rank, s.alpha, s.dropout, generator,
                                               s.recompute_dropout))
        _, self._t_f, _ = prune_schedule(ctx.total_steps, s.prune_start_fraction, s.prune_end_fraction,
                                         s.prune_interval_steps)
        self._last_step = 0
        return model

    def on_step_end(self, model: nn.Module, step: int, total_steps: int) -> None:
        s = self.settings
        self._last_step = step
        layers = list(dydora_layers(model).values())
        t_i, t_f, interval = prune_schedule(total_steps, s.prune_start_fraction, s.prune_end_fraction,
                                            s.prune_interval_steps)
        self._t_f = t_f
        with torch.no_grad():
            if step > t_f:  # distribution fixed: hold the components pruned at t_f at c = 0
                for layer in layers:
                    layer.dydora_c.masked_fill_(layer.pruned, 0)
                return
            for layer in layers:
                layer.importance_ema.mul_(s.beta).add_((1 - s.beta) * layer.raw_importance())
            if step >= t_i and ((step - t_i) % interval == 0 or step == t_f):
                self._prune(layers, budget_schedule(step, total_steps, s.initial_rank, s.r, t_i, t_f))

    def checkpoint_allowed(self, model: nn.Module, step: int, total_steps: int) -> bool:
        """Only states after the last prune event (step ≥ t_f) may be restored as the best checkpoint."""
        s = self.settings
        _, t_f, _ = prune_schedule(total_steps, s.prune_start_fraction, s.prune_end_fraction, s.prune_interval_steps)
        return step >= t_f

    def _prune(self, layers: list[DyDoRALinear], budget: float) -> None:
        """Keep the globally most important components; zero the gates of the rest."""
        scores = torch.cat([layer.importance_ema for layer in layers])
        n_prune = math.floor(len(layers) * (self.settings.initial_rank - budget) + 1e-6)
        order = torch.argsort(scores, descending=True, stable=True)
        pruned = torch.zeros_like(scores, dtype=torch.bool)
        pruned[order[scores.numel() - n_prune:]] = True
        offset = 0
        for layer in layers:
            mask = pruned[offset: offset + layer.init_r].to(layer.pruned.device)
            offset += layer.init_r
            layer.pruned.copy_(mask)
            layer.dydora_c.masked_fill_(mask, 0)

    def regularizer(self, model: nn.Module) -> torch.Tensor | None:
        s = self.settings
        if s.dem_weight == 0:
            return None
        if not s.dem_after_pruning and self._t_f is not None and self._last_step + 1 > self._t_f:
            return None
        layers = list(dydora_layers(model).values())
        total = sum(layer.dydora_A.var(dim=1).sum() + layer.dydora_B.var(dim=0).sum() for layer in layers)
        n = sum(layer.init_r for layer in layers)
        return s.dem_weight * total / n

    def for_inference(self, model: nn.Module) -> nn.Module:
        """Fold each layer's live components into its base weight; return the plain model."""
        for parent in list(model.modules()):
            for attr, child in list(parent.named_children()):
                if isinstance(child, DyDoRALinear):
                    with torch.no_grad():
                        child.base.weight += child.delta_weight().to(child.base.weight.dtype)
                    setattr(parent, attr, child.base)
        return model

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Live components (cᵢ ≠ 0) per adapted matrix: the final rank allocation.

        Before training every gate is 0, so every count is 0; after a full
        schedule the total is r × number of matrices.
        """
        layers = dydora_layers(model)
        budget = {name: layer.live_count() for name, layer in layers.items()}
        return {"budget": budget, "total_live": sum(budget.values()), "init_r": self.settings.initial_rank,
                "target_r": self.settings.r, "adapted_matrices": len(layers),
                "pruning_finished": self._t_f is not None and self._last_step >= self._t_f}
