"""torch's FLOP counter, totals only: the same formulas without a module hook on every call.

``torch.utils.flop_counter.FlopCounterMode`` attributes each operator's FLOPs
to the modules it runs in, through a ``ModuleTracker`` that hooks every
module's forward and registers a multi-grad hook on every module's outputs —
a sixth of a meta-tensor step's time, for a per-module table the accounting
never prints. :class:`TotalFlops` is the same counter (its registry, its
decompositions, its ``get_total_flops``) with the tracker left out, so every
FLOP lands under ``"Global"`` exactly as it does with the tracker.

:func:`run_counted` is the same rule for one operator, for a dispatch mode
that counts FLOPs itself (measure/meta_shapes.py remembers each answer's
FLOPs with its shapes, so a meta step dispatches once per operator, not twice).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode, flop_registry


class TotalFlops(FlopCounterMode):
    """A ``FlopCounterMode`` that counts the total alone (no module tracking, nothing displayed)."""

    def __init__(self) -> None:
        super().__init__(display=False)

    def __enter__(self):
        self.flop_counts.clear()
        self.mode = _FlopCounterMode(self)
        self.mode.__enter__()
        return self

    def __exit__(self, *args):
        entered, self.mode = self.mode, None
        return entered.__exit__(*args)


def run_counted(mode, func, args: tuple, kwargs: dict, add: Callable[[int], None]):
    """``func(*args, **kwargs)`` inside the dispatch mode ``mode``, its FLOPs passed to ``add`` as torch's
    FlopCounterMode counts them (the same test, the same order): an operator not in the registry is first
    offered its decomposition, run under ``mode`` so that each part is counted by this rule; one that does not
    decompose runs, and its formula from ``torch.utils.flop_counter``'s registry, if it has one, gives its
    FLOPs. (The registry is keyed by operator packet and the dispatched ``func`` is an overload, so torch offers
    every operator its decomposition; so does this. Most operators have none — ``OpOverload.decompose`` then
    returns NotImplemented without running anything — so which do is remembered, and the others skip
    re-entering the mode, which costs more than most meta kernels.)"""
    if func not in flop_registry and func is not torch.ops.prim.device.default and _decomposes(func):
        with mode:
            out = func.decompose(*args, **kwargs)
        if out is not NotImplemented:
            return out
    out = func(*args, **kwargs)
    formula = flop_registry.get(func._overloadpacket)
    if formula is not None:
        add(formula(*args, **kwargs, out_val=out))
    return out


_IMPLICIT = torch._C.DispatchKey.CompositeImplicitAutograd
_HAS_IMPLICIT_KERNEL: dict[object, bool] = {}


def _decomposes(func) -> bool:
    """Whether ``func.decompose`` has a decomposition to run: the two kernels it looks for (torch/_ops.py), a
    Python one (looked up each time: they can be registered late) or a C++ one (remembered)."""
    if _IMPLICIT in func.py_kernels:
        return True
    known = _HAS_IMPLICIT_KERNEL.get(func)
    if known is None:
        known = _HAS_IMPLICIT_KERNEL[func] = torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), _IMPLICIT)
    return known


__all__ = ["TotalFlops", "run_counted"]
