"""Old import paths of modules that moved into stage folders (0.1 → 0.2), kept for one release with a warning.

``import energybench.runner`` still works and warns ``DeprecationWarning``,
naming the new path. Modules that were split (``compare``, ``history``) come
back as one module that looks names up in the pieces.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

_RUN = ("runner", "plan", "preflight", "execute", "child")
MOVED: dict[str, tuple[str, ...]] = {
    **{f"energybench.{m}": (f"energybench.run.{m}",) for m in _RUN},
    "energybench.executors": ("energybench.run.executors",),
    **{f"energybench.executors.{m}": (f"energybench.run.executors.{m}",) for m in
       ("base", "forkserver", "gpus", "local", "occupancy", "process", "ray_executor", "ray_task", "settings")},
    "energybench.backbones": ("energybench.models.backbones",),
    "energybench.hub": ("energybench.models.hub",),
    "energybench.evaluate": ("energybench.train.evaluate",),
    "energybench.batches": ("energybench.train.batches",),
    "energybench.tables": ("energybench.report.tables",),
    "energybench.plots": ("energybench.report.plots",),
    "energybench.htmlpage": ("energybench.report.html",),
    "energybench.compare": tuple(f"energybench.regress.{m}" for m in
                                 ("metrics", "thresholds", "sides", "baseline", "verdicts", "render")),
    "energybench.history": ("energybench.regress.history", "energybench.regress.git"),
}


def warn_moved(old: str, new: str) -> None:
    warnings.warn(f"{old} has moved to {new}; the old path will be removed in the next release",
                  DeprecationWarning, stacklevel=3)


class _Joined(types.ModuleType):
    """A split module under its old name: attribute look-ups go to each piece in turn."""

    def __init__(self, name: str, pieces: tuple[str, ...]):
        super().__init__(name, f"Moved: see {', '.join(pieces)}.")
        self._pieces = pieces

    def __getattr__(self, attr: str):
        for piece in self._pieces:
            mod = importlib.import_module(piece)
            if hasattr(mod, attr):
                return getattr(mod, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r} (moved to {', '.join(self._pieces)})")


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        pieces = MOVED[spec.name]
        warn_moved(spec.name, " + ".join(pieces))
        if len(pieces) == 1:
            return importlib.import_module(pieces[0])
        return _Joined(spec.name, pieces)

    def exec_module(self, module):
        pass


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())  # before PathFinder: a moved package's children alias too
