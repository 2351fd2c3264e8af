"""T5 text-to-text formatting and the candidate strings scored by rank classification."""

from __future__ import annotations

from energybench.tasks.base import Example, TaskSpec
from energybench.tasks.glue import SECOND_PREFIX as GLUE_SECOND
from energybench.tasks.synthetic import SECOND_PREFIX as SYNTH_SECOND

_SECOND_PREFIX = {**GLUE_SECOND, **SYNTH_SECOND}
# T5 casts STS-B as regression over strings rounded to 0.2 (0.0 ... 5.0).
REGRESSION_CANDIDATES = tuple(round(i * 0.2, 1) for i in range(26))


def source_text(spec: TaskSpec, ex: Example) -> str:
    text = f"{spec.prefix} {ex.text_a}"
    if ex.text_b is not None:
        text += f" {_SECOND_PREFIX.get(spec.name, 'sentence2:')} {ex.text_b}"
    return text


def round_to_fifth(x: float) -> float:
    return min(5.0, max(0.0, round(x * 5) / 5))


def target_text(spec: TaskSpec, ex: Example) -> str:
    if spec.generative:
        return str(ex.label)
    if spec.is_regression:
        return f"{round_to_fifth(float(ex.label)):.1f}"
    return spec.label_words[int(ex.label)]


def candidates(spec: TaskSpec) -> list[str]:
    """Every string rank classification scores, in class order."""
    if spec.generative:
        raise ValueError(f"task {spec.name!r} is generative (scored by exact match of generated answers); "
                         "it has no candidate strings to rank")
    if spec.is_regression:
        return [f"{c:.1f}" for c in REGRESSION_CANDIDATES]
    return list(spec.label_words)


def candidate_value(spec: TaskSpec, index: int) -> int | float:
    """The prediction a winning candidate stands for (class id or score)."""
    return REGRESSION_CANDIDATES[index] if spec.is_regression else index
