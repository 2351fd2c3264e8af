"""Data-free twins of a model and its batch: the same shapes, dtypes and graph, no data, no arithmetic.

Two kinds of twin run an operator's shape rule instead of its kernel, so one
training step of a 7B model costs seconds and a few MB of host memory:

* **meta** tensors (``device="meta"``): no fake-tensor bookkeeping per
  operator, and the step's repeated shape questions are answered from memory
  (:mod:`energybench.measure.meta_shapes`; many meta shape rules are Python
  references), so a t5-base step at batch 96 takes about a second — several
  times faster than fake tensors. Autocast has no meta dispatch key, and a CPU constant mixed
  into a meta computation is an error, so the accounting uses them only where
  neither arises and falls back to fake tensors otherwise;
* **fake** tensors (torch's ``FakeTensorMode``): CPU tensors as far as every
  kernel choice and autocast are concerned, at the cost of a Python dispatch
  per operator.

Three things a plain ``copy.deepcopy`` gets wrong, and which this module
handles for both:

* parameters and buffers are copied through a deepcopy *memo* pre-filled with
  their fake twins (built by one converter, so tied weights and views keep
  sharing one fake storage, and a parameter stays trainable or frozen);
* a fake tensor's storage reports ``data_ptr() == 0``, so callers key
  storages by identity (:func:`storage_key`), never by address;
* transformers drops an all-ones attention mask only when it can read the
  mask (``masking_utils`` treats a fake mask as "being traced" and keeps it,
  which changes the graph: an extra bias tensor per attention). The decision
  is taken on the *real* batch before the fake step and replayed inside it
  (:func:`replay_mask_decisions`).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch._subclasses.meta_utils import MetaConverter

MASK_KEYS = ("attention_mask", "decoder_attention_mask")


def new_fake_mode() -> FakeTensorMode:
    """A fake mode that accepts real constants (a model's non-parameter tensors) and fakes them on use."""
    return FakeTensorMode(allow_non_fake_inputs=True)


def storage_key(t: torch.Tensor) -> int:
    """Identity of ``t``'s storage (the StorageImpl), valid for real and fake tensors alike."""
    return t.untyped_storage()._cdata


def _fake_cpu(t: torch.Tensor, mode: FakeTensorMode) -> torch.Tensor:
    """The fake twin of ``t`` on the CPU (a GPU tensor's twin is moved there without touching its data)."""
    fake = mode.from_tensor(t)
    if fake.device.type != "cpu":
        with mode:
            fake = fake.to("cpu")
    return fake


def _twin_copy(model: nn.Module, twin) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are ``twin(tensor)``; nothing of the real model is
    copied but its Python structure."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        if id(p) not in memo:
            memo[id(p)] = nn.Parameter(twin(p.detach()), requires_grad=p.requires_grad)
    for b in model.buffers():
        if id(b) not in memo:
            memo[id(b)] = twin(b)
    return copy.deepcopy(model, memo)


def fake_copy(model: nn.Module, mode: FakeTensorMode) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are fake CPU tensors (same shapes, dtypes,
    sharing, requires_grad)."""
    return _twin_copy(model, lambda t: _fake_cpu(t, mode))


def fake_batch(batch: dict, mode: FakeTensorMode) -> dict:
    """The batch with every tensor replaced by its fake twin (other values kept)."""
    return {k: _fake_cpu(v, mode) if torch.is_tensor(v) else v for k, v in batch.items()}


def is_meta_model(model: nn.Module) -> bool:
    """True when every parameter and buffer of ``model`` is already a meta tensor (built under
    ``torch.device("meta")``, as ``estimate`` builds backbones)."""
    tensors = [*model.parameters(), *model.buffers()]
    return bool(tensors) and all(t.is_meta and not isinstance(t, FakeTensor) for t in tensors)


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on the meta device (same shapes, dtypes, sharing, requires_grad): tied weights
    and views keep sharing one meta storage, as one storage per real storage is made."""
    if is_meta_model(model):
        return model
    return _twin_copy(model, _MetaTwins())


class _MetaTwins:
    """Meta twins of a model's tensors, one meta storage per real one. A plain strided tensor's twin is that
    storage viewed with the tensor's dtype, offset, sizes and strides (a tenth of ``MetaConverter``'s cost per
    tensor, which matters on a run's 250-parameter model); anything else — a subclass, a conjugate or negative
    view, a sparse or quantized layout — goes through torch's ``MetaConverter``."""

    def __init__(self) -> None:
        self.storages: dict[int, torch.UntypedStorage] = {}
        self.converter = MetaConverter()

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if t.is_meta:
            return t
        if (type(t) not in (torch.Tensor, nn.Parameter) or t.layout != torch.strided or t.is_quantized
                or t.is_conj() or t.is_neg()):
            return self.converter(t)
        key = storage_key(t)
        storage = self.storages.get(key)
        if storage is None:
            nbytes = t.untyped_storage().nbytes()
            storage = self.storages[key] = torch.empty(nbytes, dtype=torch.uint8, device="meta").untyped_storage()
        return torch.empty(0, dtype=t.dtype, device="meta").set_(storage, t.storage_offset(), t.shape, t.stride())


def meta_batch(batch: dict) -> dict:
    """The batch with every tensor moved to the meta device (other values kept)."""
    return {k: v.to("meta") if torch.is_tensor(v) else v for k, v in batch.items()}


def masks_all_ones(batch: dict) -> bool:
    """True when every attention mask in the real batch is all ones (or there is none)."""
    return all(bool(batch[k].bool().all()) for k in MASK_KEYS if torch.is_tensor(batch.get(k)))


@contextlib.contextmanager
def replay_mask_decisions(all_ones: bool) -> Iterator[None]:
    """Inside, transformers decides whether a *fake* padding mask can be skipped as it would on the real batch.

    A fake (or meta) padding mask derives from the batch's masks (a slice of one, or
    ``ones_like`` of the ids when none is given), so it is all ones exactly when
    they all are. Without transformers this does nothing.
    """
    try:
        from transformers import masking_utils as mu
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    originals = {}

    def wrap(name: str):
        orig = getattr(mu, name)

        def decided(padding_mask, *args, **kwargs):
            if isinstance(padding_mask, FakeTensor) or (torch.is_tensor(padding_mask) and padding_mask.is_meta):
                if not all_ones:
                    return False
                padding_mask = None
            return orig(padding_mask, *args, **kwargs)

        originals[name] = orig
        setattr(mu, name, decided)

    for name in ("_ignore_causal_mask_sdpa", "_ignore_bidirectional_mask_sdpa", "_can_skip_bidirectional_mask_xpu"):
        if hasattr(mu, name):
            wrap(name)
    try:
        yield
    finally:
        for name, orig in originals.items():
            setattr(mu, name, orig)
