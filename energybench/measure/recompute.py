"""What gradient checkpointing's recomputation saves during backward: the largest segment's tensors.

A reentrant checkpoint (``gradient_checkpointing_enable``, the
``use_reentrant=True`` path the training loop uses) keeps only its segment's
inputs through the forward; in backward it runs the segment's forward again,
with gradients on, back-propagates through it and drops what that forward
saved before the next segment is recomputed. So on top of the checkpoints'
inputs, the backward holds one segment's saved tensors at a time, and its
peak holds the largest of them — the "one layer recomputed at a time" a
count of the forward's saves leaves out.

:class:`RecomputedSegments` is a :class:`SavedTensors` that counts the
saves made during backward, one segment at a time: a segment begins where a
module is called at depth 0 inside backward (the checkpoint calls the layer it
wraps), and ``peak`` is the largest segment's bytes. Storages that are
parameters or already saved by the forward (a segment's recomputation sees
its checkpoint's input again, detached, on the same storage) are not
counted twice. Without checkpointing nothing is saved during backward and
``peak`` is 0.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from energybench.measure.semantics import SavedTensors


class RecomputedSegments(SavedTensors):
    """Saved-for-backward tensors of each recomputed segment; ``peak`` is the largest segment's bytes."""

    def __init__(self, key: Callable[[torch.Tensor], object], exclude: set):
        super().__init__(key, exclude)
        self.largest = 0
        self._depth = 0

    @property
    def peak(self) -> int:
        return max(self.largest, self.total)

    def _enter_module(self, module, args) -> None:
        if self._depth == 0:
            self._close_segment()
        self._depth += 1

    def _leave_module(self, module, args, output) -> None:
        self._depth -= 1

    def _close_segment(self) -> None:
        self.largest = self.peak
        self.sizes.clear()
        self.held.clear()

    @contextlib.contextmanager
    def recording(self) -> Iterator["RecomputedSegments"]:
        """Count what is saved inside this block (wrap ``loss.backward()`` in it)."""
        enter = register_module_forward_pre_hook(self._enter_module)
        leave = register_module_forward_hook(self._leave_module)
        try:
            with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t):
                yield self
        finally:
            enter.remove()
            leave.remove()
            self._close_segment()
