"""Tokenised batches for training and for rank-classification scoring."""

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


def training_batch(tokenizer, spec: TaskSpec, examples: Sequence[Example], max_src: int, max_tgt: int) -> dict:
    batch = encode_sources(tokenizer, spec, examples, max_src)
    batch["labels"] = encode_targets(tokenizer, [target_text(spec, e) for e in examples], max_tgt)
    return batch


def epoch_batches(examples: Sequence[Example], batch_size: int, rng: random.Random) -> Iterator[list[Example]]:
    order = list(range(len(examples)))
    rng.shuffle(order)
    for i in range(0, len(order), batch_size):
        yield [examples[j] for j in order[i:i + batch_size]]


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
