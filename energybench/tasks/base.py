"""The shapes every task shares: an example, a task's spec, its split data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One example before formatting. ``label`` is an int class or a float score."""

    text_a: str
    text_b: str | None
    label: int | float


@dataclass(frozen=True)
class TaskSpec:
    """How a task is turned into text and scored.

    label_words: the target string of each class, or None for regression
        (candidates are then 0.0, 0.2, ..., 5.0 as T5 does for STS-B).
    metric: the GLUE metric whose value is the task's ``score`` (``exact_match``
        for a generative task).
    generative: the label is a free answer string, scored by exact match of
        greedy generation (decoder-only backbones); ``label_words`` is None.
    """

    name: str
    prefix: str
    field_a: str
    field_b: str | None
    label_words: tuple[str, ...] | None
    metric: str  # accuracy | matthews | pearson_spearman | f1_accuracy | exact_match
    generative: bool = False

    @property
    def is_regression(self) -> bool:
        return self.label_words is None and not self.generative

    @property
    def num_labels(self) -> int | None:
        """Outputs of a classification head for this task (1: a regression head; None: generative)."""
        if self.generative:
            return None
        return 1 if self.is_regression else len(self.label_words)


@dataclass
class TaskData:
    spec: TaskSpec
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    source: str = ""
    notes: list[str] = field(default_factory=list)
