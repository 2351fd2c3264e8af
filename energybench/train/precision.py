"""Numeric precision and gradient checkpointing: what the loop does, and what the accounting must follow.

``precision`` (TrainingSettings):

* ``fp32`` — everything float32.
* ``bf16-mixed`` / ``fp16-mixed`` — fp32 master weights, gradients and AdamW
  state; the forward runs under ``torch.autocast`` in bfloat16 / float16
  (autocast's cached casts of the weights are saved for backward, so the
  accounting counts them as activations). fp16 scales the loss with a
  ``GradScaler`` (it underflows without); bf16 needs none and also runs on CPU.
* ``bf16`` — the backbone is cast to bfloat16 *before* the method attaches,
  as peft's own method benchmark loads Llama (``torch_dtype=bfloat16``), and
  trained so. What the method adds keeps the dtype the method gives it:
  peft's adapters (LoRA, AdaLoRA, DoRA) are float32 (peft's
  ``autocast_adapter_dtype``), so their gradients and AdamW state are float32;
  energybench's own modules follow the weight they attach to (Houlsby
  adapters, BitFit's biases, dynamic-rank DoRA, READ's RNN, LST's side
  network: bfloat16 parameters, gradients and AdamW state); full fine-tuning
  trains bfloat16 weights with bfloat16 state. The forward runs under bf16
  autocast so float32 and bfloat16 operands meet in bfloat16 matmuls.

``gradient_checkpointing`` uses the backbone's own
``gradient_checkpointing_enable`` (reentrant, so each checkpoint's inputs are
saved through autograd and counted), with transformers'/peft's input-grad hook
(``enable_input_require_grads``) so that a frozen embedding does not cut the
graph at the first checkpoint.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed", "bf16")


def backbone_dtype(precision: str) -> torch.dtype:
    """The dtype the backbone is loaded in (before the method attaches)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype the forward runs in under autocast, or None for no autocast."""
    return {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16, "bf16": torch.bfloat16}.get(precision)


def loss_scaler_state_bytes(precision: str) -> int:
    """Bytes the loop's ``GradScaler`` keeps from step to step: 0 but for fp16-mixed.

    Read off a real scaler once it has scaled a loss (its scale, float32, and
    growth tracker, int32: 8 bytes), so the accounting counts what torch's
    scaler holds rather than a number written here. The per-step ``found_inf``
    and inverse scale it makes while unscaling (4 bytes each) are not kept.
    """
    if precision != "fp16-mixed":
        return 0
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.ones(()))
    return sum(v.nbytes for v in vars(scaler).values() if torch.is_tensor(v))


def prepare_backbone(model: nn.Module, precision: str, gradient_checkpointing: bool) -> nn.Module:
    """Cast the backbone and turn checkpointing on, before the method attaches (so the method sees it so)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if backbone_dtype(precision) != torch.float32:
        model.to(backbone_dtype(precision))
    if gradient_checkpointing:
        if not hasattr(model, "gradient_checkpointing_enable"):
            raise ValueError(f"gradient_checkpointing: {type(model).__name__} has no gradient_checkpointing_enable")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        model.enable_input_require_grads()
    return model


class Precision:
    """The loop's precision hooks: ``autocast()`` around the forward, ``backward``/``step`` with fp16's scaler."""

    def __init__(self, precision: str, device: torch.device):
        self.dtype = autocast_dtype(precision)
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16-mixed" else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Before clipping: gradients in their true scale."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()
