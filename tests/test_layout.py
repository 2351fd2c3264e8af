"""The stage layout: third-party plugins' import path is stable, moved modules still import for one release with a
DeprecationWarning naming the new path, and every module stays small."""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_plugin_api_imports_from_its_public_path_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from energybench.methods.base import ApplyContext, Method, MethodSettings, freeze
    assert issubclass(Method, object) and callable(freeze)
    assert {"model_config"} <= set(dir(MethodSettings)) and ApplyContext.__name__ == "ApplyContext"


@pytest.mark.parametrize("old, new, name", [
    ("energybench.runner", "energybench.run.runner", "run_suite"),
    ("energybench.backbones", "energybench.models.backbones", "load_backbone"),
    ("energybench.executors.settings", "energybench.run.executors.settings", "ExecutorSettings"),
    ("energybench.compare", "energybench.regress.verdicts", "compare"),
    ("energybench.compare", "energybench.regress.metrics", "resolve_metrics"),
    ("energybench.history", "energybench.regress.git", "git_commit"),
    ("energybench.tables", "energybench.report.tables", "efficiency_table"),
])
def test_a_moved_module_imports_from_its_old_path_with_a_deprecation_warning(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        mod = importlib.import_module(old)
    assert getattr(mod, name) is getattr(importlib.import_module(new), name)


def test_the_old_train_module_names_still_resolve_with_a_warning():
    import energybench.train
    from energybench.train.loop import fit

    with pytest.warns(DeprecationWarning, match=r"energybench\.train\.loop\.fit"):
        assert energybench.train.fit is fit


def test_no_module_of_the_harness_is_over_400_lines():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in [*(ROOT / "energybench").rglob("*.py"), *(ROOT / "methods").glob("*.py")]}
    assert sizes, "no module found"
    assert {p: n for p, n in sizes.items() if n > 400} == {}
