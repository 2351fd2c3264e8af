"""Remembered shape rules for meta tensors: a transformer's step asks the same question thousands of times.

Most of torch's meta kernels for elementwise and reduction operators are the
Python reference implementations (``torch._refs``, registered over the C++
structured kernels by ``torch._meta_registrations``): an ``add`` of two meta
tensors costs ~300 µs of type promotion and broadcasting in Python. A t5-base
training step runs ~7,700 operators, but the 12 layers of each stack ask the
same ~200 distinct (operator, input shapes) questions over and over, so the
answer is worth remembering — the idea behind ``FakeTensorMode``'s own
dispatch cache, here for plain meta tensors.

An answer is reused only where it is a pure function of what the key holds:

* the operator is functional — not a view, no argument or result aliased or
  mutated (schema ``alias_info``), no data-dependent or dynamic output shape —
  and returns one or more plain ``Tensor``s;
* every tensor argument is a plain meta tensor (a CPU scalar mixed in, a fake
  tensor or a subclass is passed through untouched), described in the key by
  shape, stride, dtype and storage offset; every other argument by its type
  and value (unhashable ones bypass the cache), with the default dtype (what a
  factory without ``dtype=`` makes);
* each result owns a fresh storage of exactly the size ``empty_strided``
  gives it, at offset 0, shared with no input and no other result (a
  factory asked for a CPU tensor is answered by its kernel every time).

A hit allocates the remembered results with ``empty_strided`` on the meta
device: a fresh storage per result, as the kernel would give, so the
accounting's storage identities (saved activations counted once per storage)
are unchanged. An answer carries the FLOPs torch's counter gives that
question (its formula and its decompositions), so the cache is also the meta
step's FLOP counter. Counts with and without the cache are identical (the meta
accounting tests run with it against a real step; tests/test_meta_shapes.py
compares both, and its FLOPs with ``FlopCounterMode``'s).
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from energybench.measure.fake import storage_key
from energybench.measure.flops import run_counted

_Answer = tuple[bool, tuple[tuple[tuple[int, ...], tuple[int, ...], torch.dtype], ...], int]  # (tuple?, layouts, FLOPs)
_MAX_ENTRIES = 200_000  # distinct questions; a 7B step asks a few thousand


class MetaShapeCache(TorchDispatchMode):
    """A dispatch mode that answers a repeated meta-tensor question from memory and counts the step's FLOPs.

    FLOPs are counted by torch's rule (measure/flops.py ``run_counted``: torch's formulas and decompositions) on
    each question's first asking and remembered with its answer, so a meta step needs this one mode, not this
    and a ``FlopCounterMode`` on top (a Python dispatch per operator saved: about half a cached step's time).
    ``get_total_flops()`` is what a ``FlopCounterMode`` around the same operators reports. ``answers`` may be
    shared between instances (the answers do not depend on the model); ``hits``/``misses``/``passed`` say how
    much was reused.
    """

    def __init__(self, answers: dict | None = None) -> None:
        super().__init__()
        self.answers: dict[tuple, _Answer] = _SHARED if answers is None else answers
        self.hits = self.misses = self.passed = 0
        self.flops = 0

    def get_total_flops(self) -> int:
        return self.flops

    def _add_flops(self, n: int) -> None:
        self.flops += n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        key = _question(func, args, kwargs)
        if key is None:
            self.passed += 1
            return run_counted(self, func, args, kwargs, self._add_flops)
        answer = self.answers.get(key)
        if answer is not None:
            self.hits += 1
            as_tuple, results, flops = answer
            self.flops += flops
            outs = tuple(torch.empty_strided(shape, stride, dtype=dtype, device="meta")
                         for shape, stride, dtype in results)
            return outs if as_tuple else outs[0]
        self.misses += 1
        before = self.flops
        out = run_counted(self, func, args, kwargs, self._add_flops)
        answer = _answer_of(out, args, kwargs, self.flops - before)
        if answer is not None and len(self.answers) < _MAX_ENTRIES:
            self.answers[key] = answer
        return out


_SHARED: dict[tuple, _Answer] = {}
_FUNCTIONAL: dict[object, bool] = {}


def _is_functional(func) -> bool:
    known = _FUNCTIONAL.get(func)
    if known is None:
        schema = func._schema
        known = (not func.is_view and len(schema.returns) > 0
                 and all(a.alias_info is None for a in schema.arguments)
                 and all(r.alias_info is None and str(r.type) == "Tensor" for r in schema.returns)
                 and torch.Tag.dynamic_output_shape not in func.tags
                 and torch.Tag.data_dependent_output not in func.tags)
        _FUNCTIONAL[func] = known
    return known


def _question(func, args, kwargs) -> tuple | None:
    """The cache key of one call, or None when its answer may not be reused."""
    if not _is_functional(func):
        return None
    try:
        key = (func, torch.get_default_dtype(),  # what a factory without dtype= makes
               _described(args), _described(tuple(kwargs.items())) if kwargs else ())
        hash(key)
    except (_Unreusable, TypeError):  # not a plain meta tensor; an unhashable argument
        return None
    return key


class _Unreusable(Exception):
    """An argument whose answer may not be reused (not a plain meta tensor)."""


def _described(values: tuple | list) -> tuple:
    """Tensors by layout, lists and tuples item by item, anything else by type and value (a hand-written
    flatten: torch's pytree costs more than the shape rule it would save on small operators)."""
    out = []
    for a in values:
        if isinstance(a, torch.Tensor):
            if not a.is_meta or type(a) not in (torch.Tensor, torch.nn.Parameter):
                raise _Unreusable
            out.append((a.shape, a.stride(), a.dtype, a.storage_offset()))
        elif isinstance(a, (list, tuple)):
            out.append((type(a), _described(a)))
        else:
            out.append((type(a), a))
    return tuple(out)


def _tensors(values) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for a in values:
        if isinstance(a, torch.Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(_tensors(a))
    return found


def _answer_of(out, args, kwargs, flops: int) -> _Answer | None:
    """What to remember of a result, or None when it is not a set of fresh, plainly laid out storages."""
    outs = out if isinstance(out, tuple) else (out,)
    if not all(isinstance(o, torch.Tensor) and o.is_meta and type(o) is torch.Tensor for o in outs):
        return None
    inputs = {storage_key(a) for a in _tensors((*args, *kwargs.values()))}
    keys = [storage_key(o) for o in outs]
    if len(set(keys)) != len(outs) or inputs.intersection(keys):
        return None
    for o in outs:
        fresh = torch.empty_strided(o.shape, o.stride(), dtype=o.dtype, device="meta").untyped_storage()
        if o.storage_offset() != 0 or o.untyped_storage().nbytes() != fresh.nbytes():
            return None
    return isinstance(out, tuple), tuple((tuple(o.shape), o.stride(), o.dtype) for o in outs), flops


__all__ = ["MetaShapeCache"]
