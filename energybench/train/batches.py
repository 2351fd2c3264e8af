"""Tokenised batches for training and scoring, in the form the backbone's family trains on.

``seq2seq``: the T5 text-to-text source and its label string as target
tokens (rank classification scores candidate strings). ``encoder``: the raw
sentence (pair) as the tokenizer's own pair encoding, and the label as a
class id (or a float for regression) for the classification head.
``causal``: prompt + continuation in one sequence, labels on the
continuation only (``energybench.train.causal``). All pad to the longest row
of the batch (dynamic padding).
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

import torch

from energybench.tasks.base import Example, TaskSpec
from energybench.tasks.formatting import candidates, source_text, target_text

IGNORE = -100


_TOKEN_CACHE: dict[tuple[int, str, int], list[int]] = {}


def token_ids(tokenizer, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """Token ids of each text (truncated, with EOS), tokenising each distinct text once.

    The pure-Python byte tokenizer costs more than a tiny model's training
    step; every run re-reads the same examples each epoch, so the ids are
    memoised per (tokenizer, text, max_len).
    """
    key = id(tokenizer)
    missing = list(dict.fromkeys(t for t in texts if (key, t, max_len) not in _TOKEN_CACHE))
    if missing:
        for text, ids in zip(missing, tokenizer(missing, max_length=max_len, truncation=True)["input_ids"]):
            _TOKEN_CACHE[(key, text, max_len)] = ids
    return [_TOKEN_CACHE[(key, t, max_len)] for t in texts]


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def encode_sources(tokenizer, spec: TaskSpec, examples: Sequence[Example], max_len: int) -> dict[str, torch.Tensor]:
    rows = token_ids(tokenizer, [source_text(spec, e) for e in examples], max_len)
    return {"input_ids": _pad(rows, tokenizer.pad_token_id),
            "attention_mask": _pad([[1] * len(r) for r in rows], 0)}


def encode_targets(tokenizer, texts: Sequence[str], max_len: int) -> torch.Tensor:
    return _pad(token_ids(tokenizer, texts, max_len), IGNORE)


_PAIR_CACHE: dict[tuple, dict[str, list[int]]] = {}


def encode_pairs(tokenizer, examples: Sequence[Example], max_len: int) -> dict[str, torch.Tensor]:
    """Sentence (pairs) as the tokenizer's own encoding ([CLS] a [SEP] b [SEP] on BERT), padded to the batch."""
    key = id(tokenizer)
    for e in examples:
        k = (key, e.text_a, e.text_b, max_len)
        if k not in _PAIR_CACHE:
            enc = tokenizer(e.text_a, e.text_b, max_length=max_len, truncation=True)
            _PAIR_CACHE[k] = {n: list(v) for n, v in enc.items() if n in ("input_ids", "token_type_ids")}
    rows = [_PAIR_CACHE[(key, e.text_a, e.text_b, max_len)] for e in examples]
    batch = {"input_ids": _pad([r["input_ids"] for r in rows], tokenizer.pad_token_id),
             "attention_mask": _pad([[1] * len(r["input_ids"]) for r in rows], 0)}
    if all("token_type_ids" in r for r in rows):
        batch["token_type_ids"] = _pad([r["token_type_ids"] for r in rows], 0)
    return batch


def head_batch(tokenizer, spec: TaskSpec, examples: Sequence[Example], max_len: int) -> dict:
    """A classification-head batch: inputs plus class ids (long) or regression targets (float)."""
    batch = encode_pairs(tokenizer, examples, max_len)
    if spec.is_regression:
        batch["labels"] = torch.tensor([float(e.label) for e in examples], dtype=torch.float32)
    else:
        batch["labels"] = torch.tensor([int(e.label) for e in examples], dtype=torch.long)
    return batch


def training_batch(tokenizer, spec: TaskSpec, examples: Sequence[Example], max_src: int, max_tgt: int,
                   family: str = "seq2seq") -> dict:
    """One training batch for ``family``'s objective (see the module docstring)."""
    from energybench.models.family import family_named

    if family_named(family).scoring == "head":
        return head_batch(tokenizer, spec, examples, max_src)
    if family == "causal":  # prompt + continuation, loss on the continuation only
        from energybench.train.causal import causal_batch

        return causal_batch(tokenizer, spec, examples, max_src, max_tgt)
    batch = encode_sources(tokenizer, spec, examples, max_src)
    batch["labels"] = encode_targets(tokenizer, [target_text(spec, e) for e in examples], max_tgt)
    return batch


def text_length(example: Example) -> int:
    """Characters of an example's text(s): a length proxy for grouping rows that needs no tokenising."""
    return len(example.text_a) + len(example.text_b or "")


def epoch_batches(examples: Sequence[Example], batch_size: int, rng: random.Random,
                  group_by_length: bool = False) -> Iterator[list[Example]]:
    """One epoch's batches in a random order drawn from ``rng``.

    ``group_by_length``: rows of like length share a batch, so dynamic
    padding pads a batch to a length near its rows' own — on SST-2's
    training phrases (13 tokens on average, 40 the longest of a random batch
    of 32) a padded batch holds 1.35× its real tokens instead of 3×, and a
    MiniLM-L6 run trains in less than half the time. The grouping is
    transformers' (the Trainer's ``group_by_length``: shuffle, cut into
    mega-batches of 50 batches, sort each by length); the batches are then
    shuffled, because transformers' order walks each mega-batch from its
    longest rows to its shortest, and a validation after such a walk meets a
    model that has just seen fifty steps of ever shorter phrases.
    """
    if group_by_length:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        lengths = [text_length(e) for e in examples]
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        order = get_length_grouped_indices(lengths, batch_size, generator=generator)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(batches)
    else:
        order = list(range(len(examples)))
        rng.shuffle(order)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in batches:
        yield [examples[j] for j in batch]


def candidate_labels(tokenizer, spec: TaskSpec, max_tgt: int) -> list[torch.Tensor]:
    """One label row per candidate string (unpadded, with EOS)."""
    return [encode_targets(tokenizer, [c], max_tgt)[0] for c in candidates(spec)]


def sequence_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ log p(label token) per row, ignoring IGNORE positions."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    mask = labels != IGNORE
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}
