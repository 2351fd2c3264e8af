"""``synth-math``: deterministic arithmetic word problems with a numeric answer, for decoder-only backbones.

The shape of MetaMathQA / GSM8K (a question in words, a number as the
answer, scored by exact match of the generated answer) at a size a CPU can
train on: "What is 17 plus 25?" → "42". Generated from a seed, offline.
Operations: plus, minus (never negative), times (one factor ≤ 12); operands
0–99 for plus and minus. The answer is at most four characters, so a
``max_target_length`` of 8 tokens caps generation with room for EOS even on
the byte tokenizer.

Scoring is generative (``TaskSpec.generative``): greedy decoding of the
prompt, at most ``max_target_length`` new tokens, and exact match of the
whitespace-trimmed answer string (metric ``exact_match``). Only the causal
family generates; other families reject the task before training.
"""

from __future__ import annotations

import random

from energybench.tasks.base import Example, TaskData, TaskSpec
from energybench.tasks.splits import read_protocol_split

MATH_SPECS: dict[str, TaskSpec] = {
    "synth-math": TaskSpec("synth-math", "math question:", "question", None, None, "exact_match", generative=True),
}

DEFAULT_TRAIN_SIZE = 2000
DEFAULT_VALIDATION_SIZE = 200

_PHRASES = ("What is {a} {op} {b}?", "Compute {a} {op} {b}.", "How much is {a} {op} {b}?")


def _problem(rng: random.Random) -> Example:
    op = rng.choice(("plus", "minus", "times"))
    if op == "times":
        a, b = rng.randint(0, 99), rng.randint(0, 12)
        answer = a * b
    else:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if op == "minus" and b > a:
            a, b = b, a
        answer = a + b if op == "plus" else a - b
    return Example(rng.choice(_PHRASES).format(a=a, op=op, b=b), None, answer)


def make_synth_math(name: str = "synth-math", seed: int = 0, train_size: int = DEFAULT_TRAIN_SIZE,
                    validation_size: int = DEFAULT_VALIDATION_SIZE) -> TaskData:
    """Generate train/validation problems from ``seed``, then READ's split protocol (validation halved into test)."""
    rng = random.Random(f"{name}:{seed}")
    train = [_problem(rng) for _ in range(train_size)]
    validation = [_problem(rng) for _ in range(validation_size)]
    tr, va, te = read_protocol_split(train, validation)
    return TaskData(MATH_SPECS[name], tr, va, te, source=f"synthetic:{name}:seed={seed}")
