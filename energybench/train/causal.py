"""Batches, rank classification and greedy generation for the decoder-only ``causal`` family.

A task's example becomes one sequence, ``prompt + continuation``:

- prompt: the task's text-to-text source (``source_text``) followed by
  ``"\\nanswer:"``, tokenised with the tokenizer's own special tokens (Llama's
  BOS; an EOS the tokenizer appends, as ByT5's does, is dropped), truncated
  to ``max_source_length``;
- continuation: ``" " + target`` without special tokens, then EOS, truncated
  to ``max_target_length``.

Rows are right-padded (pad id, attention 0). Labels are the input ids on
continuation tokens and −100 on prompt and padding, so the causal LM's
shifted cross-entropy covers the continuation only. Right padding keeps the
position ids of real tokens at 0…n−1, so no position bookkeeping is needed.

Rank classification scores each candidate string by Σ log p(continuation
token | everything before it). Greedy generation uses the model's own
``generate`` with its KV cache where the model has one (the backbone as
loaded, peft's wrappers, methods that modify modules in place): prompts are
left-padded for it, as Hugging Face generation expects. Side-network wrappers
(READ, LST) only return logits; for them each step re-runs the full forward
on right-padded rows, picking each row's next token at its own last position.
Both are greedy and stop at EOS or ``max_new_tokens``.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import nn

from energybench.tasks.base import Example, TaskSpec
from energybench.tasks.formatting import candidates, source_text, target_text

IGNORE = -100
ANSWER_CUE = "\nanswer:"

_CACHE: dict[tuple, list[int]] = {}


def _eos(tokenizer) -> int:
    return tokenizer.eos_token_id


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def prompt_ids(tokenizer, spec: TaskSpec, ex: Example, max_len: int) -> list[int]:
    text = source_text(spec, ex) + ANSWER_CUE
    key = (id(tokenizer), "p", text, max_len)
    if key not in _CACHE:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if ids and ids[-1] == _eos(tokenizer):
            ids = ids[:-1]
        _CACHE[key] = ids[:max_len]
    return _CACHE[key]


def continuation_ids(tokenizer, text: str, max_len: int) -> list[int]:
    key = (id(tokenizer), "c", text, max_len)
    if key not in _CACHE:
        ids = list(tokenizer(" " + text, add_special_tokens=False)["input_ids"])
        _CACHE[key] = (ids[: max_len - 1] + [_eos(tokenizer)])
    return _CACHE[key]


def join(tokenizer, prompts: list[list[int]], conts: list[list[int]]) -> dict[str, torch.Tensor]:
    """Right-padded prompt+continuation rows with labels on the continuation only."""
    rows = [p + c for p, c in zip(prompts, conts)]
    width = max(len(r) for r in rows)
    pad = _pad_id(tokenizer)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, conts)):
        n = len(p) + len(c)
        ids[i, :n] = torch.tensor(p + c)
        mask[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(c)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def causal_batch(tokenizer, spec: TaskSpec, examples: Sequence[Example], max_src: int, max_tgt: int) -> dict:
    prompts = [prompt_ids(tokenizer, spec, e, max_src) for e in examples]
    conts = [continuation_ids(tokenizer, target_text(spec, e), max_tgt) for e in examples]
    return join(tokenizer, prompts, conts)


def continuation_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ log p(labels[t] | tokens < t) per row over labels != −100 (logits at t−1 predict token t)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = labels[:, 1:]
    mask = target != IGNORE
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


@torch.no_grad()
def causal_candidate_scores(model: nn.Module, tokenizer, spec: TaskSpec, examples: Sequence[Example],
                            max_src: int, max_tgt: int, batch_size: int, device: torch.device) -> torch.Tensor:
    """(n_examples, n_candidates) continuation log-likelihoods."""
    cands = [continuation_ids(tokenizer, c, max_tgt) for c in candidates(spec)]
    rows = []
    for start in range(0, len(examples), batch_size):
        prompts = [prompt_ids(tokenizer, spec, e, max_src) for e in examples[start:start + batch_size]]
        per_cand = []
        for cand in cands:
            batch = {k: v.to(device) for k, v in join(tokenizer, prompts, [cand] * len(prompts)).items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits
            per_cand.append(continuation_log_likelihood(logits, labels))
        rows.append(torch.stack(per_cand, dim=1).cpu())
    return torch.cat(rows, dim=0)


@torch.no_grad()
def greedy_generate(model: nn.Module, tokenizer, prompts: list[list[int]], max_new_tokens: int,
                    device: torch.device) -> list[list[int]]:
    """Greedy continuation of each prompt, up to EOS (not returned) or ``max_new_tokens`` tokens."""
    can_generate = getattr(model, "can_generate", None)
    if callable(can_generate) and can_generate() and hasattr(model, "generate"):
        return _cached_generate(model, tokenizer, prompts, max_new_tokens, device)
    return _recomputed_generate(model, tokenizer, prompts, max_new_tokens, device)


def _cached_generate(model: nn.Module, tokenizer, prompts: list[list[int]], max_new_tokens: int,
                     device: torch.device) -> list[list[int]]:
    """Greedy generation through ``model.generate`` (KV cache), prompts left-padded."""
    eos, pad = _eos(tokenizer), _pad_id(tokenizer)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    new = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                         do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad, use_cache=True,
                         temperature=None, top_p=None, top_k=None)[:, width:].tolist()
    return [row[: row.index(eos)] if eos in row else row for row in new]


def _recomputed_generate(model: nn.Module, tokenizer, prompts: list[list[int]], max_new_tokens: int,
                         device: torch.device) -> list[list[int]]:
    """Greedy generation for models that only return logits: the whole forward again at every step."""
    eos, pad = _eos(tokenizer), _pad_id(tokenizer)
    seqs = [list(p) for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    live = list(range(len(prompts)))
    for _ in range(max_new_tokens):
        if not live:
            break
        width = max(len(seqs[i]) for i in live)
        ids = torch.full((len(live), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(live):
            ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
            mask[row, : len(seqs[i])] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        last = torch.tensor([len(seqs[i]) - 1 for i in live], device=logits.device)
        nxt = logits[torch.arange(len(live), device=logits.device), last].argmax(-1).tolist()
        still = []
        for i, tok in zip(live, nxt):
            if tok == eos:
                continue
            out[i].append(tok)
            seqs[i].append(tok)
            still.append(i)
        live = still
    return out


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def generate_answers(model: nn.Module, tokenizer, spec: TaskSpec, examples: Sequence[Example], max_src: int,
                     max_new_tokens: int, batch_size: int, device: torch.device) -> tuple[list[str], int, float]:
    """(decoded answers, tokens generated, seconds) of greedy generation for ``examples``."""
    answers, n_tokens = [], 0
    t0 = time.perf_counter()
    for start in range(0, len(examples), batch_size):
        prompts = [prompt_ids(tokenizer, spec, e, max_src) for e in examples[start:start + batch_size]]
        for ids in greedy_generate(model, tokenizer, prompts, max_new_tokens, device):
            n_tokens += len(ids)
            answers.append(decode(tokenizer, ids))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return answers, n_tokens, time.perf_counter() - t0
