"""Resolves a task name (+ optional local folder) to split, formatted-ready data."""

from __future__ import annotations

from energybench.tasks.base import TaskData
from energybench.tasks.glue import (
    GLUE_SPECS,
    check_glue_available,
    load_glue_hub,
    load_glue_tsv,
)
from energybench.tasks.math import MATH_SPECS, make_synth_math
from energybench.tasks.synthetic import SYNTHETIC_SPECS, make_synthetic

TASK_NAMES = tuple(SYNTHETIC_SPECS) + tuple(MATH_SPECS) + tuple(GLUE_SPECS)


def load_task(name: str, data_dir: str | None = None, data_seed: int = 0,
              max_train_examples: int | None = None) -> TaskData:
    if name in SYNTHETIC_SPECS:
        data = make_synthetic(name, seed=data_seed)
    elif name in MATH_SPECS:
        data = make_synth_math(name, seed=data_seed)
    elif data_dir is not None:
        data = load_glue_tsv(name, data_dir)
    else:
        data = load_glue_hub(name)
    if max_train_examples is not None and len(data.train) > max_train_examples:
        data.notes.append(f"train truncated from {len(data.train)} to {max_train_examples} examples")
        data.train = data.train[:max_train_examples]
    return data


def task_spec(name: str):
    return SYNTHETIC_SPECS.get(name) or MATH_SPECS.get(name) or GLUE_SPECS[name]


def check_task_available(name: str, data_dir: str | None) -> str | None:
    """A reason the task's data cannot be loaded, or None."""
    if name in SYNTHETIC_SPECS or name in MATH_SPECS:
        return None
    return check_glue_available(name, data_dir)
