"""Which tensors a training step saves for backward: as the CUDA kernels users train on would, or as the CPU's.

The graph is the same on both devices; what differs is what two kernel
families keep alive until backward:

* **dropout** — CPU ``dropout`` draws a float noise tensor of the input's
  dtype and multiplies by it, so autograd saves the noise (4 bytes an element
  in fp32); CUDA's fused ``native_dropout`` saves a bool mask (1 byte an
  element). Under CUDA semantics every training-mode dropout is routed
  through ``torch.native_dropout``, whose autograd formula saves exactly that
  mask.
* **attention** — the fused CUDA SDPA kernels save their inputs, their output
  and a float32 logsumexp (plus two int64 RNG words), never the attention
  matrix. Under CUDA semantics ``scaled_dot_product_attention`` is computed
  by the math path (same FLOPs, counted by ``FlopCounterMode`` as its matmuls)
  while the tensors that path saves are hidden from the counter, and the fused
  kernel's saved tensors are counted instead (without gradients — inference
  — only the FLOPs count; the CPU's fused attention has no FLOP formula in
  ``torch.utils.flop_counter``, so CPU semantics count no attention FLOPs
  where the CPU picks it): flash attention (fp16/bf16, no
  mask) with logsumexp (B, H, Lq); memory-efficient attention (an additive
  mask or bias such as T5's position bias, or fp32) with logsumexp
  (B, H, ⌈Lq/32⌉·32) and the mask. This mirrors the kernel choice of
  ``torch.nn.attention`` on an NVIDIA GPU of compute capability ≥ 8.0.

CPU semantics changes nothing: the fake step saves what a real CPU step saves.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

SEMANTICS = ("cuda", "cpu")
LSE_BLOCK = 32  # memory-efficient attention pads its logsumexp's query dimension to this
RNG_WORDS_BYTES = 2 * 8  # philox seed and offset, one int64 each


class SavedTensors:
    """Distinct storages saved for backward, by identity; ``hidden`` > 0 means saves are not counted."""

    def __init__(self, key: Callable[[torch.Tensor], int], exclude: set[int]):
        self.key, self.exclude = key, exclude
        self.sizes: dict[object, int] = {}
        self.held: list[torch.Tensor] = []  # keeps each counted storage alive, so no identity is reused
        self.hidden = 0

    def add(self, t: torch.Tensor) -> None:
        k = self.key(t)
        if k not in self.exclude and k not in self.sizes:
            self.sizes[k] = t.untyped_storage().nbytes()
            self.held.append(t)

    def add_bytes(self, label: str, nbytes: int) -> None:
        """A tensor the modelled kernel saves that the computed graph does not hold."""
        self.sizes[(label, len(self.sizes))] = nbytes

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        if not self.hidden:
            self.add(t)
        return t

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


class CudaKernels(TorchFunctionMode):
    """Routes dropout and SDPA so that ``saved`` sees what the fused CUDA kernels would save."""

    def __init__(self, saved: SavedTensors):
        super().__init__()
        self.saved = saved

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.dropout, torch.dropout):
            return self._dropout(func, args, kwargs)
        if func is F.scaled_dot_product_attention:
            return self._sdpa(args, kwargs)
        return func(*args, **kwargs)

    def _dropout(self, func, args, kwargs):
        names = ("input", "p", "training", "inplace") if func is F.dropout else ("input", "p", "train")
        a = {**dict(zip(names, args)), **kwargs}
        x, p = a["input"], a.get("p", 0.5)
        training = a.get("training", a.get("train", True))
        if not training or p <= 0 or p >= 1 or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        out = torch.native_dropout(x, p, True)[0]
        return x.copy_(out) if a.get("inplace") else out

    def _sdpa(self, args, kwargs):
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        a = {**dict(zip(names, args)), **kwargs}
        q, k, v, mask = a["query"], a["key"], a["value"], a.get("attn_mask")
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v) if torch.is_tensor(t))
        self.saved.hidden += 1
        try:
            out = torch.ops.aten._scaled_dot_product_attention_math(
                q, k, v, mask, a.get("dropout_p", 0.0), a.get("is_causal", False), None,
                scale=a.get("scale"), enable_gqa=a.get("enable_gqa", False))[0]
        finally:
            self.saved.hidden -= 1
        if not needs_grad:  # inference: nothing is saved; the FLOPs are the math path's, as the fused kernel's
            return out
        flash = mask is None and q.dtype in (torch.float16, torch.bfloat16)
        for t in (q, k, v, out) + (() if mask is None else (mask,)):
            self.saved.add(t)
        batch_heads = math.prod(q.shape[:-2])
        lq = q.shape[-2]
        rows = lq if flash else math.ceil(lq / LSE_BLOCK) * LSE_BLOCK
        self.saved.add_bytes("sdpa.logsumexp", batch_heads * rows * 4)
        self.saved.add_bytes("sdpa.rng", RNG_WORDS_BYTES)
        return out
