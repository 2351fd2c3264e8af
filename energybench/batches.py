"""Tokenised batches for training and for rank-classification scoring."""

from __future__ import annotations

import random
from typing import Iterator, Sequence

import torch

from energybench.tasks.base import Example, TaskSpec
from energybench.tasks.formatting import candidates, source_text, target_text

IGNORE = -100


def encode_sources(tokenizer, spec: TaskSpec, examples: Sequence[Example], max_len: int) -> dict[str, torch.Tensor]:
    enc = tokenizer([source_text(spec, e) for e in examples], max_length=max_len, truncation=True,
                    padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def encode_targets(tokenizer, texts: Sequence[str], max_len: int) -> torch.Tensor:
    enc = tokenizer(list(texts), max_length=max_len, truncation=True, padding=True, return_tensors="pt")
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = IGNORE
    return labels


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
