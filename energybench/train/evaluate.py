"""Scoring a task the way the backbone's family is trained: rank classification or the head's output.

Encoder family (``scoring == "head"``): the classification head's argmax, or
its single output for regression, as BERT-style models are evaluated.

Seq2seq family, rank classification: score every candidate label string, predict the likeliest.

Causal family: the same rank classification over candidate continuations of
the prompt, or, for a generative task (``synth-math``), exact match of
greedy generation capped at ``max_target_length`` new tokens
(``energybench.train.causal``).

Generation would reward methods for formatting, not for knowing the answer;
ranking the task's candidate strings by their log-likelihood under the model
works the same way for every method (including side networks that only
return logits) and is how T5-style classifiers are usually scored.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from energybench.tasks.base import Example, TaskSpec
from energybench.tasks.formatting import candidate_value
from energybench.tasks.metrics import compute_metrics
from energybench.train.batches import (
    candidate_labels,
    encode_sources,
    head_batch,
    sequence_log_likelihood,
    text_length,
    to_device,
)


def _reusable_encoding(model: nn.Module, src: dict) -> dict:
    """Inputs for one candidate's forward; the encoder runs once per batch where it can.

    Hugging Face encoder-decoders (and peft wrappers, and methods that modify
    modules in place) accept ``encoder_outputs``, so every candidate reuses one
    encoder pass. Side-network wrappers (READ, LST) offer the same through
    ``reusable_encoding(input_ids, attention_mask)``: the frozen encoder's states
    and what the side network computes from them. Without either, a model gets
    the raw inputs and runs whole, which gives the same scores, only slower —
    and would charge the method's evaluation for the harness's recomputation.
    """
    reusable = getattr(model, "reusable_encoding", None)
    if reusable is not None:
        return reusable(src["input_ids"], src["attention_mask"])
    get_encoder = getattr(model, "get_encoder", None)
    if get_encoder is None:
        return dict(src)
    encoder_outputs = get_encoder()(input_ids=src["input_ids"], attention_mask=src["attention_mask"])
    return {"encoder_outputs": encoder_outputs, "attention_mask": src["attention_mask"]}


@torch.no_grad()
def candidate_scores(model: nn.Module, tokenizer, spec: TaskSpec, examples: Sequence[Example],
                     max_src: int, max_tgt: int, batch_size: int, device: torch.device) -> torch.Tensor:
    """(n_examples, n_candidates) log-likelihoods."""
    cands = candidate_labels(tokenizer, spec, max_tgt)
    width = max(len(c) for c in cands)
    padded = torch.full((len(cands), width), -100, dtype=torch.long)
    for i, c in enumerate(cands):
        padded[i, : len(c)] = c
    rows = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        src = to_device(encode_sources(tokenizer, spec, chunk, max_src), device)
        inputs = _reusable_encoding(model, src)
        per_cand = []
        for ci in range(len(cands)):
            labels = padded[ci, : len(cands[ci])].unsqueeze(0).expand(len(chunk), -1).contiguous().to(device)
            out = model(**inputs, labels=labels)
            per_cand.append(sequence_log_likelihood(out.logits, labels))
        rows.append(torch.stack(per_cand, dim=1).cpu())
    return torch.cat(rows, dim=0)


@torch.no_grad()
def head_predictions(model: nn.Module, tokenizer, spec: TaskSpec, examples: Sequence[Example], max_len: int,
                     batch_size: int, device: torch.device) -> list[int | float]:
    """Class ids (argmax of the logits) or regression outputs of a classification-head model, in input order.

    Rows are batched shortest first, so a batch pads to a length near its
    rows' own (SST-2's test sentences: 25 tokens on average, 55 the longest);
    a row's output does not depend on its batch, as padding is masked.
    """
    order = sorted(range(len(examples)), key=lambda i: text_length(examples[i]))
    preds: list[int | float] = [0] * len(examples)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = head_batch(tokenizer, spec, [examples[i] for i in rows], max_len)
        batch.pop("labels")
        logits = model(**to_device(batch, device)).logits.float().cpu()
        for i, value in zip(rows, logits[:, 0].tolist() if spec.is_regression else logits.argmax(dim=-1).tolist()):
            preds[i] = value
    return preds


def _causal_predictions(model, tokenizer, spec, examples, max_src, max_tgt, batch_size, device) -> list:
    from energybench.train import causal

    if spec.generative:  # max_target_length caps the new tokens
        return causal.generate_answers(model, tokenizer, spec, examples, max_src, max_tgt, batch_size, device)[0]
    scores = causal.causal_candidate_scores(model, tokenizer, spec, examples, max_src, max_tgt, batch_size, device)
    return [candidate_value(spec, int(i)) for i in scores.argmax(dim=1)]


def evaluate(model: nn.Module, tokenizer, spec: TaskSpec, examples: Sequence[Example], max_src: int,
             max_tgt: int, batch_size: int, device: torch.device,
             family: str = "seq2seq") -> tuple[float, dict[str, float]]:
    """(score, metrics) of ``model`` on ``examples``, scored as ``family`` scores tasks (module docstring)."""
    from energybench.models.family import family_named

    fam = family_named(family)
    was_training = model.training
    model.eval()
    try:
        if spec.generative and fam.name != "causal":
            raise ValueError(f"task {spec.name!r} is scored by generation, defined on the causal family only "
                             f"(this backbone is {fam.name!r})")
        if fam.name == "causal":  # decoder-only: rank continuations, or exact match of greedy generation
            preds = _causal_predictions(model, tokenizer, spec, examples, max_src, max_tgt, batch_size, device)
        elif fam.scoring == "head":
            preds = head_predictions(model, tokenizer, spec, examples, max_src, batch_size, device)
        else:
            scores = candidate_scores(model, tokenizer, spec, examples, max_src, max_tgt, batch_size, device)
            preds = [candidate_value(spec, int(i)) for i in scores.argmax(dim=1)]
    finally:
        model.train(was_training)
    refs = [e.label for e in examples]
    if spec.generative:
        refs = [str(r) for r in refs]
    if spec.is_regression:
        refs = [float(r) for r in refs]
    return compute_metrics(spec.metric, preds, refs)
