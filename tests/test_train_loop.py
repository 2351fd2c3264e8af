"""``fit`` as a unit: a one-parameter model, a recording method and scripted validation scores.

The model's task loss has zero gradient; the method's regularizer is ``Σ w`` (gradient 1 on every weight),
so every gradient the loop produces comes from the regularizer. With a constant gradient of 1, AdamW's
bias-corrected update is exactly ``lr`` (m̂ = 1, √v̂ = 1; weight decay 0), so the learning rate of each
step is read off the change of ``w``. Validation scores are scripted by replacing the evaluator the loop
calls, so patience and the best-weights restore are checked against hand-made sequences.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import energybench.train.loop as loop
from energybench.methods.base import Method
from energybench.tasks.base import Example, TaskData
from energybench.tasks.synthetic import SYNTHETIC_SPECS
from energybench.train.settings import TrainingSettings

LR = 0.01


class ByteIds:
    """The two things ``fit`` asks of a tokenizer (ids per text, the pad id), without loading transformers."""

    pad_token_id = 0

    def __call__(self, texts, max_length, truncation=True):
        return {"input_ids": [list(t.encode()[: max_length - 1]) + [1] for t in texts]}


TOK = ByteIds()


class OneWeight(nn.Module):
    """loss = 0·Σw + 1: finite, gradient-free; records w at each forward."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.frozen = nn.Parameter(torch.ones(1), requires_grad=False)
        self.register_buffer("forwards", torch.zeros(()))  # state that is not a parameter
        self.seen_at_forward: list[float] = []

    def forward(self, input_ids, attention_mask, labels):
        self.seen_at_forward.append(float(self.w.detach()[0]))
        self.forwards += 1
        return type("Out", (), {"loss": 0.0 * self.w.sum() + 1.0})()


class Recording(Method):
    name = "recording"

    def __init__(self):
        super().__init__()
        self.hook_calls: list[tuple[int, int, float, float | None]] = []

    def apply(self, model, ctx):
        return model

    def regularizer(self, model):
        return model.w.sum()

    def on_step_end(self, model, step, total_steps):
        g = model.w.grad
        self.hook_calls.append((step, total_steps, float(model.w.detach()[0]), None if g is None else float(g[0])))


class ScriptedEval:
    """Returns the next scripted score and records w at each call."""

    def __init__(self, scores):
        self.scores, self.calls, self.forwards, self.examples = list(scores), [], [], []

    def __call__(self, model, tokenizer, spec, examples, *args, **kwargs):  # kwargs: family
        self.calls.append(float(model.w.detach()[0]))
        self.forwards.append(float(model.forwards))
        self.examples.append(list(examples))
        return self.scores[len(self.calls) - 1], {}


def _data(n_train: int) -> TaskData:
    ex = [Example(f"s{i}", None, i % 2) for i in range(n_train)]
    return TaskData(SYNTHETIC_SPECS["synth-sst2"], ex, ex[:2], ex[:2])


def _fit(monkeypatch, scores, *, n_train=20, total_steps=10, log=None, **cfg):
    ev = ScriptedEval(scores)
    monkeypatch.setattr(loop, "evaluate", ev)
    model, method = OneWeight(), Recording()
    cfg.setdefault("grad_clip", None)
    settings = TrainingSettings(learning_rate=LR, batch_size=1, max_source_length=8, max_target_length=4, **cfg)
    res = loop.fit(model, method, TOK, _data(n_train), settings, total_steps=total_steps,
                   device=torch.device("cpu"), seed=0, log=log or (lambda m: None))
    return res, model, method, ev


def test_learning_rate_warms_up_linearly_then_decays_linearly_to_zero(monkeypatch):
    res, model, method, _ = _fit(monkeypatch, [0.0], total_steps=10, warmup_ratio=0.2, max_epochs=1,
                                 patience=None)
    assert res.steps == 10
    w = [0.0] + [c[2] for c in method.hook_calls]
    lrs = [(w[i] - w[i + 1]) / LR for i in range(10)]  # the update of step i+1, in units of the base lr
    # warm-up over 2 steps: 1/2, 1; then (10 - s)/(10 - 2) for s = 2 … 9
    expected = [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_without_warmup_the_first_step_takes_the_full_rate(monkeypatch):
    _, _, method, _ = _fit(monkeypatch, [0.0], total_steps=4, warmup_ratio=0.0, max_epochs=1, patience=None,
                           max_steps=4)
    w = [0.0] + [c[2] for c in method.hook_calls]
    assert [(w[i] - w[i + 1]) / LR for i in range(4)] == pytest.approx([1.0, 3 / 4, 2 / 4, 1 / 4], rel=1e-6)


def test_on_step_end_sees_gradients_after_the_optimizer_step_before_they_are_cleared(monkeypatch):
    res, model, method, _ = _fit(monkeypatch, [0.0], total_steps=5, warmup_ratio=0.0, max_epochs=1, patience=None)
    assert [(s, t) for s, t, _, _ in method.hook_calls] == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    # the gradient is the regularizer's (task loss has none): added to the loss, still there in the hook
    assert [g for *_, g in method.hook_calls] == [1.0] * 5
    # the hook sees w already updated: what the next forward sees, not what this step's forward saw
    hook_w = [w for _, _, w, _ in method.hook_calls]
    assert hook_w[:-1] == model.seen_at_forward[1:]
    assert all(h < f for h, f in zip(hook_w, model.seen_at_forward))
    assert model.w.grad is None  # cleared after the hook (set_to_none)
    assert res.final_train_loss == pytest.approx(1.0 + 2 * hook_w[-2])  # task 1 + Σw at the last forward


def test_patience_stops_training_and_the_best_weights_come_back(monkeypatch):
    # eval every step; best 3 at step 2; a tie is no improvement; two evaluations without one → stop at 4
    res, model, method, ev = _fit(monkeypatch, [1.0, 3.0, 3.0, 2.0, 9.0], total_steps=10, eval_every_steps=1,
                                  patience=2, warmup_ratio=0.0, max_epochs=1)
    assert (res.steps, res.stopped_early, res.best_step, res.best_val_score) == (4, True, 2, 3.0)
    assert [h["step"] for h in res.history] == [1, 2, 3, 4]
    assert [h["val_score"] for h in res.history] == [1.0, 3.0, 3.0, 2.0]
    assert len(ev.calls) == 4
    assert float(model.w.detach()[0]) == ev.calls[1] != ev.calls[3]  # restored to the weights scored at step 2
    assert float(model.w.detach()[1]) == ev.calls[1]
    assert float(model.forwards) == ev.forwards[1] == 2.0  # buffers come back too
    assert float(model.frozen) == 1.0
    # each evaluation reports the mean training loss since the previous one: here one step, 1 + Σw at its forward
    assert [h["train_loss"] for h in res.history] == pytest.approx([1 + 2 * w for w in model.seen_at_forward])


def test_gradients_are_clipped_before_the_step_and_the_hook_sees_the_clipped_ones(monkeypatch):
    _, _, method, _ = _fit(monkeypatch, [0.0], total_steps=3, warmup_ratio=0.0, max_epochs=1, patience=None,
                           grad_clip=0.5)
    # gradient (1, 1) has norm √2; clipped to norm 0.5 → each component 0.5/√2
    assert [g for *_, g in method.hook_calls] == pytest.approx([0.5 / 2 ** 0.5] * 3, rel=1e-5)


def test_the_log_marks_improvements_and_names_step_loss_and_score(monkeypatch):
    lines: list[str] = []
    _fit(monkeypatch, [1.0, 3.0, 2.0], total_steps=3, eval_every_steps=1, patience=None, warmup_ratio=0.0,
         max_epochs=1, log=lines.append)
    assert [ln.endswith("*") for ln in lines] == [True, True, False]
    assert lines[1].split() == ["step", "2/3", "loss", lines[1].split()[3], "val", "3.00", "*"]


def test_evaluation_loss_is_the_mean_over_the_steps_since_the_last_one(monkeypatch):
    res, model, _, _ = _fit(monkeypatch, [1.0, 2.0], total_steps=4, eval_every_steps=2, patience=None,
                            warmup_ratio=0.0, max_epochs=1)
    f = [1 + 2 * w for w in model.seen_at_forward]
    assert [h["train_loss"] for h in res.history] == pytest.approx([(f[0] + f[1]) / 2, (f[2] + f[3]) / 2])
    assert res.final_train_loss == pytest.approx(f[3])


def test_validation_examples_are_the_tasks_unless_others_are_given(monkeypatch):
    _, _, _, ev = _fit(monkeypatch, [1.0], n_train=4, total_steps=2, max_epochs=1, patience=None)
    assert ev.examples == [_data(4).validation]
    other = [Example("held out", None, 1)]
    ev = ScriptedEval([1.0])
    monkeypatch.setattr(loop, "evaluate", ev)
    loop.fit(OneWeight(), Recording(), TOK, _data(4), TrainingSettings(batch_size=2, max_epochs=1, grad_clip=None),
             total_steps=2, device=torch.device("cpu"), seed=0, validation=other, log=lambda m: None)
    assert ev.examples == [other]


def test_without_patience_training_runs_to_the_end_and_keeps_the_best(monkeypatch):
    res, model, _, ev = _fit(monkeypatch, [5.0, 1.0, 1.0, 1.0], total_steps=4, eval_every_steps=1,
                             patience=None, warmup_ratio=0.0, max_epochs=1)
    assert (res.steps, res.stopped_early, res.best_step) == (4, False, 1)
    assert float(model.w.detach()[0]) == ev.calls[0]


def test_evaluates_once_per_epoch_by_default_and_counts_epochs(monkeypatch):
    # 4 examples, batch 1 → 4 steps an epoch; 3 epochs = 12 steps; improving scores: no early stop
    import time

    t0 = time.perf_counter()
    res, _, _, ev = _fit(monkeypatch, [1.0, 2.0, 3.0], n_train=4, total_steps=12, max_epochs=3, patience=1)
    elapsed = time.perf_counter() - t0
    assert [h["step"] for h in res.history] == [4, 8, 12]
    assert (res.steps, res.epochs, res.best_step, res.stopped_early) == (12, 3.0, 12, False)
    assert len(res.step_times_s) == 12
    assert all(t > 0 for t in res.step_times_s) and sum(res.step_times_s) <= elapsed  # durations within fit's


def test_step_cap_mid_epoch_ends_with_an_evaluation_and_a_fractional_epoch(monkeypatch):
    res, _, _, _ = _fit(monkeypatch, [1.0, 2.0], n_train=4, total_steps=6, max_epochs=3, patience=None)
    assert res.steps == 6 and [h["step"] for h in res.history] == [4, 6]
    assert res.epochs == pytest.approx(1.5)


def test_a_non_finite_loss_stops_with_the_step_it_happened_at(monkeypatch):
    class Exploding(Recording):
        def regularizer(self, model):
            return model.w.sum() + (float("inf") if len(self.hook_calls) == 2 else 0.0)

    monkeypatch.setattr(loop, "evaluate", ScriptedEval([0.0]))
    settings = TrainingSettings(learning_rate=LR, batch_size=1, grad_clip=None, max_epochs=1)
    with pytest.raises(FloatingPointError, match="at step 3"):
        loop.fit(OneWeight(), Exploding(), TOK, _data(5), settings, total_steps=5, device=torch.device("cpu"),
                 seed=0, log=lambda m: None)


def test_planned_steps_are_epochs_times_batches_capped_by_max_steps():
    cfg = dict(batch_size=3, max_epochs=2)
    assert loop.planned_steps(10, TrainingSettings(**cfg)) == 8  # ceil(10/3) = 4 batches × 2 epochs
    assert loop.planned_steps(9, TrainingSettings(**cfg)) == 6
    assert loop.planned_steps(10, TrainingSettings(**cfg, max_steps=5)) == 5
    assert loop.planned_steps(10, TrainingSettings(**cfg, max_steps=100)) == 8
