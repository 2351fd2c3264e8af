"""The training loop, readable top to bottom.

forward → loss (+ the method's regularizer) → backward → clip → step →
the method's ``on_step_end`` (before gradients are cleared: AdaLoRA reads
them) → zero_grad; evaluate on validation every N steps or each epoch, keep
the best weights in memory (only states the method's ``checkpoint_allowed``
accepts: a pruned budget must be final), stop early after ``patience``
evaluations without improvement. Measurement windows wrap calls to :func:`fit`; none hide here.
``on_validation(step, examples, score)``, when given, is called after every
validation (the caller records cumulative cost there: cost to target); a
true return value stops training like early stopping (a search's pruner).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from energybench.methods.base import Method
from energybench.tasks.base import TaskData
from energybench.train.batches import epoch_batches, to_device, training_batch
from energybench.train.evaluate import evaluate
from energybench.train.precision import Precision
from energybench.train.settings import TrainingSettings


def planned_steps(n_train: int, cfg: TrainingSettings) -> int:
    """Optimizer steps the run will take at most (the schedules' T)."""
    per_epoch = math.ceil(n_train / cfg.batch_size)
    total = cfg.max_epochs * per_epoch
    return min(total, cfg.max_steps) if cfg.max_steps else total


@dataclass
class FitResult:
    steps: int = 0
    epochs: float = 0.0
    best_val_score: float | None = None
    best_step: int | None = None
    examples: int = 0  # training examples seen so far
    stopped_early: bool = False
    step_times_s: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    final_train_loss: float | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state that training can change: trainable parameters and buffers."""
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().clone() for n, b in model.named_buffers()})
    return state


def _restore(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for n, v in state.items():
            (params.get(n) if n in params else buffers[n]).copy_(v)


def fit(model: nn.Module, method: Method, tokenizer, data: TaskData, cfg: TrainingSettings, *,
        total_steps: int, device: torch.device, seed: int, validation=None,
        log: Callable[[str], None] = print,
        on_validation: Callable[[int, int, float], None] | None = None, family: str = "seq2seq") -> FitResult:
    """Train ``model`` with ``method``'s hooks; restore the best validation weights at the end.

    ``family`` (the backbone's model family) decides how a batch, its loss and a score are formed.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    has_reg, has_step_hook = method.overrides("regularizer"), method.overrides("on_step_end")
    has_checkpoint_rule = method.overrides("checkpoint_allowed")
    precision = Precision(cfg.precision, device)
    validation = data.validation if validation is None else validation
    rng = random.Random(seed)
    res = FitResult()
    best_state, bad_evals, running = None, 0, []
    per_epoch = math.ceil(len(data.train) / cfg.batch_size)

    def validate() -> bool:
        """Evaluate; return True when training should stop early."""
        nonlocal best_state, bad_evals
        score, _ = evaluate(model, tokenizer, data.spec, validation, cfg.max_source_length,
                            cfg.max_target_length, cfg.eval_batch_size, device, family=family)
        loss = sum(running) / len(running) if running else float("nan")
        res.history.append({"step": res.steps, "train_loss": loss, "val_score": score})
        # A method whose budget is not final yet (AdaLoRA, dydora) refuses the checkpoint: not "best", no patience.
        allowed = not has_checkpoint_rule or method.checkpoint_allowed(model, res.steps, total_steps)
        improved = allowed and (res.best_val_score is None or score > res.best_val_score)
        log(f"  step {res.steps}/{total_steps}  loss {loss:.4f}  val {score:.2f}{'  *' if improved else ''}"
            f"{'' if allowed else '  (budget not final)'}")
        running.clear()
        halt = bool(on_validation(res.steps, res.examples, score)) if on_validation is not None else False
        if improved:
            res.best_val_score, res.best_step, bad_evals = score, res.steps, 0
            best_state = _snapshot(model)
            return halt
        if not allowed:
            return halt
        bad_evals += 1
        return halt or (cfg.patience is not None and bad_evals >= cfg.patience)

    model.train()
    stop = False
    for epoch in range(cfg.max_epochs):
        for examples in epoch_batches(data.train, cfg.batch_size, rng, cfg.group_by_length):
            t0 = time.perf_counter()
            batch = to_device(training_batch(tokenizer, data.spec, examples, cfg.max_source_length,
                                             cfg.max_target_length, family), device)
            with precision.autocast():
                loss = model(**batch).loss
                if has_reg:
                    reg = method.regularizer(model)
                    if reg is not None:
                        loss = loss + reg
            precision.backward(loss)
            if cfg.grad_clip:
                precision.unscale(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            precision.step(optimizer)
            schedule.step()
            res.steps += 1
            res.examples += len(examples)
            if has_step_hook:
                method.on_step_end(model, res.steps, total_steps)
            optimizer.zero_grad(set_to_none=True)
            _sync(device)
            res.step_times_s.append(time.perf_counter() - t0)
            running.append(float(loss.detach()))
            res.final_train_loss = running[-1]
            if not math.isfinite(running[-1]):
                raise FloatingPointError(f"training loss became {running[-1]} at step {res.steps}")
            if cfg.eval_every_steps and res.steps % cfg.eval_every_steps == 0:
                stop = validate()
            if stop or res.steps >= total_steps:
                break
        res.epochs = epoch + min(1.0, ((res.steps - 1) % per_epoch + 1) / per_epoch)
        if not stop and (not cfg.eval_every_steps or res.steps >= total_steps) and running:
            stop = validate()
        if stop or res.steps >= total_steps:
            break
    res.stopped_early = stop
    if best_state is not None:
        _restore(model, best_state)
    return res
