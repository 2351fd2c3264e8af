"""READ's split protocol (READ §3; DESIGN.md, "GLUE protocol").

GLUE's test labels are hidden, so READ makes its own test split:
- train under 10k examples: the original validation split is halved into
  validation and test (train unchanged);
- otherwise: the original validation split becomes the test set and 1k
  training examples become the validation set (and leave train);
- MNLI: the mismatched validation split is validation, the matched one test.
The shuffles use a fixed split seed, independent of the run's seed, so every
method and seed is scored on the same test examples.
"""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")

SMALL_TRAIN_LIMIT = 10_000
LARGE_TASK_VALIDATION_SIZE = 1_000
SPLIT_SEED = 42


def _shuffled(items: Sequence[T], seed: int) -> list[T]:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def read_protocol_split(
    train: Sequence[T],
    validation: Sequence[T],
    *,
    validation_mismatched: Sequence[T] | None = None,
    seed: int = SPLIT_SEED,
) -> tuple[list[T], list[T], list[T]]:
    """(train, validation, test) following READ's protocol.

    ``validation`` is the original validation split (matched, for MNLI);
    pass MNLI's mismatched split as ``validation_mismatched``.
    """
    if validation_mismatched is not None:
        return list(train), list(validation_mismatched), list(validation)
    if len(train) < SMALL_TRAIN_LIMIT:
        val = _shuffled(validation, seed)
        half = len(val) // 2
        return list(train), val[:half], val[half:]
    tr = _shuffled(train, seed)
    return tr[LARGE_TASK_VALIDATION_SIZE:], tr[:LARGE_TASK_VALIDATION_SIZE], list(validation)
