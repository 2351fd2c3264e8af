"""Finds fine-tuning methods through the ``energybench.methods`` entry points.

Built-ins and third-party plugins come through the same path, so a plugin is
a first-class citizen: `pip install` it and its name works in a suite.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points

from energybench.methods.base import Method

GROUP = "energybench.methods"


class UnknownMethodError(KeyError):
    def __init__(self, name: str, known: list[str]):
        self.name, self.known = name, known
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown method {self.name!r}; registered methods: {', '.join(self.known)}"


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def method_names() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_entry_points())


def load_method(name: str) -> type[Method]:
    """The method class registered under ``name``."""
    eps = _entry_points()
    if name not in eps:
        raise UnknownMethodError(name, method_names())
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"entry point {name!r} ({eps[name].value}) is not an energybench Method subclass")
    return cls


def implementer(name: str) -> str:
    """Who implements method ``name``: the class's ``implemented_by`` where it says (e.g. peft), else the
    distribution that provides its entry point — a third-party plugin is not "energybench"."""
    cls = load_method(name)
    declared = cls.__dict__.get("implemented_by") or next(
        (c.__dict__["implemented_by"] for c in cls.__mro__[1:] if c is not Method and "implemented_by" in c.__dict__),
        None)
    if declared:
        return declared
    dist = getattr(_entry_points()[name], "dist", None)
    return getattr(dist, "name", None) or cls.implemented_by
