"""``epoch_batches(group_by_length=True)``: every example once per epoch, batches of like lengths, reproducible.

Lengths are drawn so the padding a batch costs can be counted by hand: the padded size of a batch is its
size times its longest row, summed over the epoch, against the same sum for the plain shuffled order.
"""

from __future__ import annotations

import random

from energybench.tasks.base import Example
from energybench.train.batches import epoch_batches


def _examples(n: int, seed: int = 3) -> list[Example]:
    rng = random.Random(seed)
    return [Example("x" * rng.randint(1, 60), None, i) for i in range(n)]  # the label is the example's index


def _padded_chars(batches) -> int:
    return sum(len(b) * max(len(e.text_a) for e in b) for b in batches)


def test_every_example_appears_exactly_once_per_epoch():
    data = _examples(1000)
    batches = list(epoch_batches(data, 32, random.Random(0), group_by_length=True))
    assert sorted(e.label for b in batches for e in b) == list(range(1000))
    assert sorted(len(b) for b in batches) == [8] + [32] * 31


def test_grouped_batches_pad_far_less_than_shuffled_ones():
    data = _examples(3200)
    grouped = list(epoch_batches(data, 32, random.Random(0), group_by_length=True))
    plain = list(epoch_batches(data, 32, random.Random(0)))
    real = sum(len(e.text_a) for e in data)
    # uniform lengths 1..60: a shuffled batch of 32 pads to ~58 (mean 30.5); a sorted one nearly to its own
    assert _padded_chars(plain) > 1.7 * real
    assert _padded_chars(grouped) < 1.1 * real


def test_batches_hold_like_lengths_and_come_in_a_shuffled_order():
    """transformers sorts each mega-batch longest first; the batches are then shuffled, so successive
    batches' longest rows go up about as often as down (a walk from long to short would never go up)."""
    data = _examples(6400)
    batches = list(epoch_batches(data, 32, random.Random(0), group_by_length=True))
    spreads = [max(len(e.text_a) for e in b) - min(len(e.text_a) for e in b) for b in batches]
    assert sum(spreads) / len(spreads) < 3  # random batches of 32 from 1..60 spread over ~55
    tops = [max(len(e.text_a) for e in b) for b in batches]
    ups = sum(later > earlier for earlier, later in zip(tops, tops[1:]))
    assert 0.35 < ups / (len(tops) - 1) < 0.65


def test_the_order_follows_the_runs_seed():
    data = _examples(500)

    def order(seed):
        return [e.label for b in epoch_batches(data, 16, random.Random(seed), group_by_length=True) for e in b]

    assert order(1) == order(1)
    assert order(1) != order(2)


def test_pairs_count_both_sentences():
    """Every first sentence is one character; only the second ones tell the rows' lengths apart."""
    rng = random.Random(5)
    data = [Example("a", "b" * rng.randint(1, 60), i) for i in range(6400)]
    batches = list(epoch_batches(data, 32, random.Random(0), group_by_length=True))
    spreads = [max(len(e.text_b) for e in b) - min(len(e.text_b) for e in b) for b in batches]
    assert sum(spreads) / len(spreads) < 3
