"""Deterministic cost accounting of one training step: memory by parts and FLOPs.

Peak CUDA memory depends on the allocator, the driver and the kernels chosen;
this accounting depends only on the model, the method, the batch's shapes and
the training settings, so the same configuration gives the same bytes on a
laptop CPU and on an H100. That is what lets a CPU-only CI catch a memory
regression exactly. The figures are *modelled* (measure/figures.py).

Two modes count the same things:

* ``fake`` (default): the step runs on a data-free twin of the model
  (:mod:`energybench.measure.fake`): no data is allocated and no arithmetic
  runs, so it costs seconds and little host memory at any scale. The twin is
  on the meta device where that counts the same (CUDA semantics, no autocast:
  the graph does not depend on the device then), else — or when an operator
  has no meta kernel — fake CPU tensors; ``StepCost.engine`` says which;
* ``real``: the step runs on a real CPU copy, kept for cross-checks (with
  dropout 0 and eager attention the two agree byte for byte and FLOP for FLOP).

and two saved-tensor semantics (:mod:`energybench.measure.semantics`):
``cuda`` (default; what the fused CUDA kernels save) or ``cpu``. Neither mode
moves the caller's random state, so accounting never changes a training run.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from energybench.measure.fake import (fake_batch, fake_copy, masks_all_ones, meta_batch, meta_copy,
                                      new_fake_mode, replay_mask_decisions, storage_key)
from energybench.measure.flops import TotalFlops
from energybench.measure.meta_shapes import MetaShapeCache
from energybench.measure.recompute import RecomputedSegments
from energybench.measure.semantics import SEMANTICS, CudaKernels, SavedTensors

MODES = ("fake", "real")
LossFn = Callable[[nn.Module, dict], torch.Tensor]


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes held at the peak of one training step, by what holds them.

    params_bytes: every parameter, trainable or frozen, each storage once.
    grads_bytes: gradients of the trainable parameters.
    optimizer_bytes: optimizer state after one step (AdamW: exp_avg, exp_avg_sq, step), plus any state
        the step keeps beside it (``extra_state_bytes``: fp16-mixed's GradScaler).
    activations_bytes: tensors autograd saved for backward, each storage once,
        not counting storages that are parameters (already in params_bytes).
    total_bytes: the sum, reported as ``mem_model_bytes``.
    """

    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.activations_bytes

    def as_fields(self) -> dict[str, int]:
        d = {f"mem_{k}": v for k, v in asdict(self).items()}
        d["mem_model_bytes"] = self.total_bytes
        return d


@dataclass(frozen=True)
class StepCost:
    """One accounted training step: its memory by parts, its FLOPs, and how they were counted."""

    memory: MemoryBreakdown
    train_flops: int
    mode: str
    semantics: str
    engine: str = "real"  # real | meta | fake-tensor: what the step ran on (fake mode picks meta where it can)


def _unique_parameters(model: nn.Module) -> list[nn.Parameter]:
    seen, out = set(), []
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


@contextlib.contextmanager
def _work_copy(model: nn.Module, batch: dict, engine: str):
    """(copy of the model in train mode, its batch) on ``engine``, inside the context the step must run in."""
    with torch.random.fork_rng(devices=[]):
        if engine == "real":
            yield copy.deepcopy(model).cpu().train(), {k: v.cpu() if torch.is_tensor(v) else v for k, v in batch.items()}
            return
        all_ones = masks_all_ones(batch)
        if engine == "meta":
            with replay_mask_decisions(all_ones):
                yield meta_copy(model).train(), meta_batch(batch)  # a meta model is used in place
            return
        already = next((p.fake_mode for p in model.parameters() if isinstance(p, FakeTensor)), None)
        fm = already or new_fake_mode()
        work = (model if already is not None else fake_copy(model, fm)).train()  # a fake model is used in place
        with fm, replay_mask_decisions(all_ones):
            yield work, fake_batch(batch, fm)


def _flop_counter(engine: str):
    """The mode that counts the step's FLOPs (``get_total_flops()``): on meta tensors the shape cache, which
    reuses repeated shape answers and their FLOPs in one dispatch (measure/meta_shapes.py); elsewhere torch's
    counter without module tracking (measure/flops.py)."""
    return MetaShapeCache() if engine == "meta" else TotalFlops()


def _kernels(semantics: str, saved: SavedTensors):
    return CudaKernels(saved) if semantics == "cuda" else contextlib.nullcontext()


def _autocast(dtype: torch.dtype | None):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _checked(mode: str, semantics: str) -> None:
    if mode not in MODES:
        raise ValueError(f"accounting_mode must be one of {', '.join(MODES)}, not {mode!r}")
    if semantics not in SEMANTICS:
        raise ValueError(f"accounting_semantics must be one of {', '.join(SEMANTICS)}, not {semantics!r}")


def _engines(model: nn.Module, mode: str, semantics: str, autocast_dtype: torch.dtype | None) -> tuple[str, ...]:
    """The engines to try in order. Meta tensors count what fake CPU tensors count only under CUDA semantics
    (CPU semantics follow the CPU's own kernel choices, e.g. its fused attention) and without autocast (which
    has no meta dispatch key); a model that is already fake stays fake."""
    if mode == "real":
        return ("real",)
    if any(isinstance(p, FakeTensor) for p in model.parameters()):
        return ("fake-tensor",)
    if semantics == "cuda" and autocast_dtype is None:
        return ("meta", "fake-tensor")
    return ("fake-tensor",)


def _on_first_engine(engines: tuple[str, ...], count: Callable[[str], object]):
    """``count(engine)`` on the first engine that can run it. Meta tensors refuse what fake tensors handle (an
    operator without a meta kernel, a CPU constant mixed in, a data-dependent branch): those fall back."""
    for engine in engines[:-1]:
        try:
            return count(engine)
        except (RuntimeError, NotImplementedError, TypeError):
            continue
    return count(engines[-1])


def account_training_step(
    model: nn.Module,
    loss_fn: LossFn,
    batch: dict,
    optimizer_factory: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    *,
    mode: str = "fake",
    semantics: str = "cuda",
    autocast_dtype: torch.dtype | None = None,
    extra_state_bytes: int = 0,
) -> StepCost:
    """Account one training step of a *copy* of ``model`` on ``batch``.

    ``loss_fn(model, batch)`` runs the forward and returns the loss (the
    method's regularizer included); it runs under ``torch.autocast`` with
    ``autocast_dtype`` when given (mixed precision: the casts autocast saves
    are counted as activations, the fp32 master weights as parameters).
    Gradient checkpointing is followed as the model is set (the saved tensors
    are then the checkpoints' inputs). The caller's model, gradients, optimizer
    and random state are untouched (a meta or fake model is used in place).
    ``extra_state_bytes`` (state the loop keeps beside the optimizer's, such as
    a loss scaler's) is added to ``optimizer_bytes``.
    """
    _checked(mode, semantics)
    return _on_first_engine(_engines(model, mode, semantics, autocast_dtype),
                            lambda engine: _training_step(model, loss_fn, batch, optimizer_factory, engine,
                                                          semantics, autocast_dtype, mode, extra_state_bytes))


def _training_step(model, loss_fn, batch, optimizer_factory, engine, semantics, autocast_dtype, mode,
                   extra_state_bytes: int) -> StepCost:
    with _work_copy(model, batch, engine) as (work, work_batch):
        params = _unique_parameters(work)
        trainable = [p for p in params if p.requires_grad]
        by_storage = {storage_key(p): p for p in params}
        params_bytes = sum(p.untyped_storage().nbytes() for p in by_storage.values())
        for p in trainable:
            p.grad = None
        saved = SavedTensors(storage_key, set(by_storage))
        kernels = _kernels(semantics, saved)
        counter = _flop_counter(engine)
        with counter:
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), kernels, _autocast(autocast_dtype):
                loss = loss_fn(work, work_batch)
            # gradient checkpointing: the segment recomputed in backward saves again (measure/recompute.py)
            recomputed = RecomputedSegments(storage_key, set(by_storage) | set(saved.sizes))
            with recomputed.recording(), _kernels(semantics, recomputed):
                loss.backward()
        activations = saved.total + recomputed.peak
        saved.held.clear()
        grads_bytes = sum(p.grad.untyped_storage().nbytes() for p in trainable if p.grad is not None)
        opt_bytes = _optimizer_state_bytes(trainable, optimizer_factory, engine) + extra_state_bytes
        if engine == "meta":
            for p in trainable:
                p.grad = None  # a meta model used in place keeps no gradients from its accounting
        return StepCost(MemoryBreakdown(params_bytes, grads_bytes, opt_bytes, activations),
                        int(counter.get_total_flops()), mode, semantics, engine)


def _optimizer_state_bytes(trainable: list[nn.Parameter], optimizer_factory, engine: str) -> int:
    """Bytes of the optimizer's state after one step.

    Optimizers read their step count with ``.item()``, which meta tensors
    refuse, so a meta or fake model's step runs on fake twins of its trainable
    parameters — one twin per distinct (shape, stride, dtype, gradient dtype),
    its state's bytes counted once per parameter of that kind (a 3B model's
    255 parameters are 7 kinds), all twins stepped by one optimizer. That
    holds for every optimizer whose state is per parameter and a function of
    its shape (torch's AdamW, Adam, SGD, RMSprop, Adagrad …); the meta and
    fake tests check it against a real step.
    """
    if not trainable:
        return 0
    if engine == "real":
        return _state_bytes(_stepped(optimizer_factory, trainable))
    kinds: dict[tuple, int] = {}
    for p in trainable:
        kind = (tuple(p.shape), p.stride(), p.dtype, None if p.grad is None else (p.grad.stride(), p.grad.dtype))
        kinds[kind] = kinds.get(kind, 0) + 1
    with new_fake_mode():
        twins = []
        for shape, stride, dtype, grad in kinds:
            twin = nn.Parameter(torch.empty_strided(shape, stride, dtype=dtype))
            if grad is not None:
                twin.grad = torch.empty_strided(shape, grad[0], dtype=grad[1])
            twins.append(twin)
        state = _stepped(optimizer_factory, twins).state  # one optimizer over one twin of each kind
        return sum(count * _tensor_bytes(state.get(twin, {})) for twin, count in zip(twins, kinds.values()))


def _stepped(optimizer_factory, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    opt = optimizer_factory(params)
    opt.step()
    return opt


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(_tensor_bytes(state) for state in opt.state.values())


def _tensor_bytes(state: dict) -> int:
    return sum(v.untyped_storage().nbytes() for v in state.values() if torch.is_tensor(v))


def account_inference(model: nn.Module, forward_fn: Callable[[nn.Module, dict], object], batch: dict, *,
                      mode: str = "fake", semantics: str = "cuda", autocast_dtype: torch.dtype | None = None) -> int:
    """FLOPs of one inference forward of ``model`` (in eval mode, no grad) on ``batch``."""
    _checked(mode, semantics)
    return _on_first_engine(_engines(model, mode, semantics, autocast_dtype),
                            lambda engine: _inference(model, forward_fn, batch, engine, semantics, autocast_dtype))


def _inference(model, forward_fn, batch, engine, semantics, autocast_dtype) -> int:
    with _work_copy(model, batch, engine) as (work, work_batch):
        work.eval()
        counter = _flop_counter(engine)
        kernels = _kernels(semantics, SavedTensors(storage_key, set()))
        with counter, torch.no_grad(), kernels, _autocast(autocast_dtype):
            forward_fn(work, work_batch)
        return int(counter.get_total_flops())


# --- the closure-style helpers older callers use: real mode, CPU semantics ------------------------------


def model_memory(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    optimizer_factory: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
) -> MemoryBreakdown:
    """Memory of one real CPU training step of a copy of ``model``; ``loss_fn(model)`` closes over its batch."""
    return account_training_step(model, lambda m, _b: loss_fn(m), {}, optimizer_factory,
                                 mode="real", semantics="cpu").memory


def train_step_flops(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor]) -> int:
    """FLOPs of one real CPU forward + backward of a copy of ``model``."""
    return account_training_step(model, lambda m, _b: loss_fn(m), {}, lambda p: torch.optim.AdamW(p, lr=1e-3),
                                 mode="real", semantics="cpu").train_flops


def inference_flops(model: nn.Module, forward_fn: Callable[[nn.Module], object]) -> int:
    """FLOPs of one inference forward, counted by torch's FLOP counter (measure/flops.py) on ``model`` itself."""
    counter = TotalFlops()
    with counter, torch.no_grad():
        forward_fn(model)
    return int(counter.get_total_flops())
