"""torch's FLOP counter, totals only: the same formulas without a module hook on every call.

``torch.utils.flop_counter.FlopCounterMode`` attributes each operator's FLOPs
to the modules it runs in, through a ``ModuleTracker`` that hooks every
module's forward and registers a multi-grad hook on every module's outputs —
a sixth of a meta-tensor step's time, for a per-module table the accounting
never prints. :class:`TotalFlops` is the same counter (its registry, its
decompositions, its ``get_total_flops``) with the tracker left out, so every
FLOP lands under ``"Global"`` exactly as it does with the tracker.
"""

from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode


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


__all__ = ["TotalFlops"]
