"""Deterministic synthetic tasks shaped like GLUE, shipped as code for offline runs.

Each is generated from a seed, is learnable from scratch by a tiny randomly
initialised T5 within the quickstart budget, and has GLUE's shape (single
sentence, sentence pair, regression) so every code path of a real GLUE run is
exercised. They measure cost, not quality: a random backbone gives
parameter-efficient methods little to adapt.

- synth-sst2: one sentiment word among filler words decides the label.
- synth-pair: two sentences, "equivalent" iff both carry an affirming word
  (balanced classes; it needs both sentences, like MRPC, but no word-level
  matching, which a random tiny model does not learn within minutes).
- synth-stsb: an intensity word in the second sentence sets a 0–5 score
  (with ±0.4 jitter), so the regression has a real correlation to find.
"""

from __future__ import annotations

import random

from energybench.tasks.base import Example, TaskData, TaskSpec
from energybench.tasks.splits import read_protocol_split

FILLER = ("the", "movie", "was", "a", "story", "of", "plot", "it", "and", "with", "this", "film", "scene", "music")
POSITIVE = ("great", "superb", "lovely", "brilliant")
NEGATIVE = ("awful", "boring", "dreadful", "terrible")
TOPICS = ("cats", "trains", "rivers")
AFFIRM = ("indeed", "surely", "agreed")
DENY = ("never", "hardly", "denied")
INTENSITY = {"unrelated": 0.0, "distant": 1.0, "loose": 2.0, "related": 3.0, "close": 4.0, "identical": 5.0}

SYNTHETIC_SPECS: dict[str, TaskSpec] = {
    "synth-sst2": TaskSpec("synth-sst2", "sst2 sentence:", "sentence", None, ("negative", "positive"), "accuracy"),
    "synth-pair": TaskSpec("synth-pair", "mrpc sentence1:", "sentence1", "sentence2",
                           ("not_equivalent", "equivalent"), "f1_accuracy"),
    "synth-stsb": TaskSpec("synth-stsb", "stsb sentence1:", "sentence1", "sentence2", None, "pearson_spearman"),
}
SECOND_PREFIX = {"synth-pair": "sentence2:", "synth-stsb": "sentence2:"}

DEFAULT_TRAIN_SIZE = 1000
DEFAULT_VALIDATION_SIZE = 300


def _sentence(rng: random.Random, key_word: str) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(1, 3))]
    words.insert(rng.randint(0, len(words)), key_word)
    return " ".join(words)


def _sst2(rng: random.Random) -> Example:
    label = rng.randint(0, 1)
    return Example(_sentence(rng, rng.choice(POSITIVE if label else NEGATIVE)), None, label)


def _pair(rng: random.Random) -> Example:
    label = rng.randint(0, 1)
    stances = (True, True) if label else rng.choice([(True, False), (False, True), (False, False)])
    a, b = (rng.choice(AFFIRM if s else DENY) for s in stances)
    return Example(_sentence(rng, a), _sentence(rng, b), label)


def _stsb(rng: random.Random) -> Example:
    word = rng.choice(list(INTENSITY))
    score = min(5.0, max(0.0, INTENSITY[word] + rng.choice((-0.4, -0.2, 0.0, 0.2, 0.4))))
    return Example(_sentence(rng, rng.choice(TOPICS)), _sentence(rng, word), round(score, 1))


_GENERATORS = {"synth-sst2": _sst2, "synth-pair": _pair, "synth-stsb": _stsb}


def make_synthetic(name: str, seed: int = 0, train_size: int = DEFAULT_TRAIN_SIZE,
                   validation_size: int = DEFAULT_VALIDATION_SIZE) -> TaskData:
    """Generate the task's original train/validation splits, then READ's protocol."""
    gen = _GENERATORS[name]
    rng = random.Random(f"{name}:{seed}")
    train = [gen(rng) for _ in range(train_size)]
    validation = [gen(rng) for _ in range(validation_size)]
    tr, va, te = read_protocol_split(train, validation)
    return TaskData(SYNTHETIC_SPECS[name], tr, va, te, source=f"synthetic:{name}:seed={seed}")
