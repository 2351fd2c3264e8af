"""A Hugging Face ``Trainer`` callback that measures training, evaluation and prediction with energybench.

    from energybench.integrations.transformers import EnergybenchCallback
    cb = EnergybenchCallback(output_dir="runs/mine", label="my-lora")
    trainer = Trainer(model=model, args=args, ..., callbacks=[cb])
    cb.attach(trainer)        # optional: reporters (TensorBoard, W&B, MLflow) see the energy keys; exact eval windows
    trainer.train(); trainer.evaluate()
    cb.close()                # writes the row (else it is written when the process exits)

Windows (an :class:`energybench.Tracker` underneath, so the same trackers and row schema as the runner):

- ``train``: from ``on_train_begin`` to the log carrying ``train_runtime`` (the Trainer's own end of training),
  so its wall time is within the Trainer's ``train_runtime``. Evaluations *during* training stay inside it,
  as the runner's train window keeps periodic validation (training cost as usually quoted).
- ``eval``, ``eval_2``, …: each ``evaluate()`` outside training; ``predict``, ``predict_2``, …: each ``predict()``.
  The Trainer has no evaluate-begin event: with :meth:`EnergybenchCallback.attach` the window wraps the whole
  call; without it, it opens at the first prediction step and so misses that first batch.

Every log gets ``energybench/<window>_<figure>`` keys (energy in kWh, power in W, figures so far for an open
window). They reach ``state.log_history`` and the callbacks after this one; reporters only when
``attach(trainer)`` has moved this callback first.

Under ``torchrun`` each rank writes its own row (``config.rank``) measuring only its own device
(``args.device``, matched to NVML by UUID), so no GPU is counted twice.
"""

from __future__ import annotations

import atexit
import functools
import os
from typing import Any

from transformers import TrainerCallback

from energybench.tracking import Tracker

LOGGED = ("energy_kwh", "gpu_energy_kwh", "gpu_power_mean_w", "cpu_energy_kwh", "wall_s")


def _precision(args) -> str:
    if getattr(args, "bf16", False):
        return "bf16-mixed"
    if getattr(args, "fp16", False):
        return "fp16-mixed"
    return "fp32" + ("+tf32" if getattr(args, "tf32", None) else "")


def _checkpointing(args) -> bool:
    """Activation (gradient) checkpointing; transformers 5 renamed the argument and warns on the old name."""
    if "activation_checkpointing" in getattr(args, "__dataclass_fields__", {}):
        return bool(args.activation_checkpointing)
    return bool(getattr(args, "gradient_checkpointing", False))


class EnergybenchCallback(TrainerCallback):
    """Measure a Trainer's train / evaluate / predict and append one row to ``output_dir/results.jsonl``.

    output_dir, label: as :class:`energybench.Tracker`. batch: optional dict of model inputs (labels included)
    for the deterministic accounting of one training step. measure: the ``measure:`` block (dict).
    """

    def __init__(self, output_dir: str | os.PathLike, label: str, *, batch: dict | None = None,
                 measure: dict | None = None, task: str = "custom", backbone: str | None = None):
        self.output_dir, self.label, self.batch, self.measure = output_dir, label, batch, measure
        self.task, self.backbone = task, backbone
        self.tracker: Tracker | None = None
        self.row = None
        self._training = False
        self._counts: dict[str, int] = {}
        self._attached = False

    # ---------------------------------------------------------------- session
    def _ensure(self, args, model) -> Tracker:
        if self.tracker is None:
            name = self.backbone or (getattr(getattr(model, "config", None), "name_or_path", None) or
                                     type(model).__name__ if model is not None else None)
            self.tracker = Tracker(self.output_dir, self.label, model, batch=self.batch, measure=self.measure,
                                   devices=[args.device], backbone=name or None, task=self.task, suite="hf-trainer")
            self.tracker.__enter__()
            atexit.register(self.close)
        if model is not None and self.tracker.model is None:
            self.tracker.model = model
        self._args = args
        return self.tracker

    def close(self) -> None:
        """Close any open window and write the row (once); later calls do nothing."""
        if self.tracker is None or self.row is not None:
            return
        args = getattr(self, "_args", None)
        if args is not None:
            self.tracker.extra_config["trainer"] = {
                "precision": _precision(args), "per_device_train_batch_size": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps, "world_size": args.world_size,
                "gradient_checkpointing": _checkpointing(args), "learning_rate": args.learning_rate,
                "max_steps": args.max_steps, "num_train_epochs": args.num_train_epochs, "seed": args.seed}
            self.tracker.seed = args.seed
        self.tracker.__exit__(None, None, None)
        self.row = self.tracker.row
        atexit.unregister(self.close)

    def _open(self, kind: str) -> None:
        n = self._counts[kind] = self._counts.get(kind, 0) + 1
        self.tracker.begin_window(kind if n == 1 else f"{kind}_{n}")

    def _close_open(self) -> dict | None:
        t = self.tracker
        if t is None or t._open is None:
            return None
        name = t._open
        return {name: t.end_window(name)}

    # ---------------------------------------------------------------- attach
    def attach(self, trainer) -> "EnergybenchCallback":
        """Put this callback first (reporters then see its log keys) and wrap ``evaluate``/``predict`` so their
        windows cover the whole call."""
        handler = trainer.callback_handler
        if self not in handler.callbacks:
            handler.add_callback(self)
        handler.callbacks.remove(self)
        handler.callbacks.insert(0, self)
        for kind, attr in (("eval", "evaluate"), ("predict", "predict")):
            original = getattr(trainer, attr)

            @functools.wraps(original)
            def wrapped(*a, _original=original, _kind=kind, **kw):
                if self._training:
                    return _original(*a, **kw)
                self._ensure(trainer.args, trainer.model)
                self._close_open()
                self._open(_kind)
                try:
                    return _original(*a, **kw)
                finally:
                    self._close_open()
            setattr(trainer, attr, wrapped)
        self._attached = True
        return self

    # ---------------------------------------------------------------- events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        t = self._ensure(args, model)
        self._close_open()
        self._training = True
        t.begin_window("train")
        self._counts["train"] = 1

    def on_prediction_step(self, args, state, control, **kwargs):
        if self._training or self._attached:
            return
        t = self._ensure(args, kwargs.get("model"))
        if t._open is None:
            self._open("eval")  # renamed to predict_N by on_predict when it was a predict() call

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self._training and not self._attached:
            self._close_open()

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        if self._training or self._attached:
            return
        closed = self._close_open()
        if closed:
            (name, figs), = closed.items()
            self._counts["eval"] -= 1
            n = self._counts["predict"] = self._counts.get("predict", 0) + 1
            self.tracker.windows[f"predict_{n}" if n > 1 else "predict"] = self.tracker.windows.pop(name)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.tracker is None or logs is None:
            return
        if self._training and "train_runtime" in logs:
            self._training = False
            self._close_open()
            self.tracker.fields["steps"] = state.global_step
            self.tracker.fields["epochs"] = state.epoch
        extra: dict[str, Any] = {}
        for window, figs in self.tracker.reading().items():
            for k in LOGGED:
                if figs.get(k) is not None:
                    extra[f"energybench/{window}_{k}"] = figs[k]
        logs.update(extra)
        if state.log_history:
            state.log_history[-1].update(extra)

    def on_train_end(self, args, state, control, **kwargs):
        if self._training:  # no train_runtime log was seen (an old or patched Trainer)
            self._training = False
            self._close_open()
            self.tracker.fields["steps"] = state.global_step
