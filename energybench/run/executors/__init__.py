"""Where a suite's runs execute: ``local`` (child processes on this machine) or ``ray`` (tasks on a cluster).

The runner expands the suite, skips finished runs and appends every row; an
executor only places pending runs and yields their rows as they finish.

Importing this package loads only the settings (the suite schema embeds
them), so ``energybench.suite`` can import it without a cycle; the executors
load on first use, and Ray only when a Ray executor prepares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from energybench.run.executors.settings import (
    RAY_INSTALL,
    ExecutorError,
    ExecutorSettings,
    RayResources,
    resolve_settings,
)

if TYPE_CHECKING:
    from energybench.run.executors.base import Events, Executor
    from energybench.run.executors.local import LocalExecutor
    from energybench.run.executors.process import run_in_child

__all__ = ["Events", "Executor", "ExecutorError", "ExecutorSettings", "LocalExecutor", "RAY_INSTALL", "RayResources",
           "make_executor", "resolve_settings", "run_in_child"]

_LAZY = {"Events": "base", "Executor": "base", "LocalExecutor": "local", "run_in_child": "process"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"energybench.run.executors.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'energybench.run.executors' has no attribute {name!r}")


def make_executor(settings: ExecutorSettings) -> "Executor":
    if settings.kind == "ray":
        from energybench.run.executors.ray_executor import RayExecutor

        return RayExecutor(settings)
    from energybench.run.executors.local import LocalExecutor

    return LocalExecutor(settings)
