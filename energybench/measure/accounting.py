"""Deterministic cost accounting of one training step: memory by parts and FLOPs.

Peak CUDA memory depends on the allocator, the driver and the kernels chosen;
this accounting depends only on the model, the method and the batch, so the
same configuration gives the same bytes on a laptop CPU and on an H100. That
is what lets a CPU-only CI catch a memory regression exactly.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes held at the peak of one training step, by what holds them.

    params_bytes: every parameter, trainable or frozen, each storage once.
    grads_bytes: gradients of the trainable parameters.
    optimizer_bytes: optimizer state after one step (AdamW: exp_avg, exp_avg_sq, step).
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


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    s = t.untyped_storage()
    return (str(t.device), s.data_ptr())


def _unique_parameters(model: nn.Module) -> list[nn.Parameter]:
    seen, out = set(), []
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def saved_activation_bytes(loss_fn: Callable[[], torch.Tensor], exclude: set[tuple[str, int]]) -> int:
    """Bytes of the distinct storages autograd saves while ``loss_fn`` runs."""
    sizes: dict[tuple[str, int], int] = {}
    held: list[torch.Tensor] = []  # keeps every saved storage alive, so no address is reused and counted once for two

    def pack(t: torch.Tensor):
        key = _storage_key(t)
        if key not in exclude and key[1] != 0:
            sizes[key] = t.untyped_storage().nbytes()
            held.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    held.clear()
    return sum(sizes.values())


def model_memory(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    optimizer_factory: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
) -> MemoryBreakdown:
    """Account one training step of a *copy* of ``model`` on the CPU.

    ``loss_fn(model)`` runs the forward and returns the loss (the method's
    regularizer included). The copy keeps the real model's weights, gradients
    and optimizer untouched.
    """
    work = copy.deepcopy(model).cpu().train()
    params = _unique_parameters(work)
    trainable = [p for p in params if p.requires_grad]
    param_keys = {_storage_key(p) for p in params}
    params_bytes = sum(p.untyped_storage().nbytes() for p in {_storage_key(p): p for p in params}.values())
    for p in trainable:
        p.grad = None
    act = saved_activation_bytes(lambda: loss_fn(work), param_keys)
    grads_bytes = sum(p.grad.untyped_storage().nbytes() for p in trainable if p.grad is not None)
    opt = optimizer_factory(trainable)
    opt.step()
    opt_bytes = 0
    for state in opt.state.values():
        for v in state.values():
            if torch.is_tensor(v):
                opt_bytes += v.untyped_storage().nbytes()
    return MemoryBreakdown(params_bytes, grads_bytes, opt_bytes, act)


def train_step_flops(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor]) -> int:
    """FLOPs of one forward + backward, counted by torch's FlopCounterMode."""
    work = copy.deepcopy(model).cpu().train()
    counter = FlopCounterMode(display=False)
    with counter:
        loss = loss_fn(work)
        loss.backward()
    return int(counter.get_total_flops())


def inference_flops(model: nn.Module, forward_fn: Callable[[nn.Module], object]) -> int:
    """FLOPs of one inference forward, counted by torch's FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        forward_fn(model)
    return int(counter.get_total_flops())
