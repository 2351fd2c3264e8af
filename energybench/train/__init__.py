"""The training loop (``loop.fit``), evaluation on a split, how examples become batches, and the loop's settings."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # energybench.train was the loop's module until 0.2: ``from energybench.train import fit`` keeps working.
    if name in ("fit", "planned_steps", "FitResult"):
        from energybench import _moved
        from energybench.train import loop

        _moved.warn_moved(f"energybench.train.{name}", f"energybench.train.loop.{name}")
        return getattr(loop, name)
    raise AttributeError(f"module 'energybench.train' has no attribute {name!r}")
