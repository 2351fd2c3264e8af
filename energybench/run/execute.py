"""Executes one run inside its own process: build, measure, train, evaluate, account.

Order matters for honest numbers. The deterministic accounting (memory by
parts, FLOPs; fake tensors by default, so it costs seconds and moves no random
state) runs on a copy of the model before training, on the run's first
batch; then the ``train`` window wraps :func:`energybench.train.fit`
(periodic validation included, as training cost is usually quoted), the
``eval`` window wraps the test-set evaluation, and the ``inference`` window
wraps the latency measurement of the model as users would deploy it
(a generative task on a causal LM adds a ``generate`` window before it:
greedy generation of the latency batch with tokens per second)
(``for_inference``: merged where the method allows). For methods that merge,
the unmerged latency is measured too, outside any window.
"""

from __future__ import annotations

import os
import platform
import random
import socket
import traceback
from datetime import datetime, timezone
from typing import Callable

import torch

from energybench import __version__
from energybench.measure.accounting import account_inference, account_training_step
from energybench.measure.figures import MODELLED, Figures
from energybench.measure.latency import measure_latency, step_time_stats
from energybench.measure.meter import Meter
from energybench.measure.settings import MeasureSettings
from energybench.measure.trackers import build_trackers
from energybench.methods.base import ApplyContext, count_parameters
from energybench.models.backbones import load_backbone
from energybench.registry import load_method
from energybench.results import RunResult
from energybench.run.curve import CurveRecorder
from energybench.run.plan import RunSpec
from energybench.run.prune import PRUNE_KEY, MedianPruning, chain
from energybench.tasks import load_task
from energybench.train.batches import to_device, training_batch
from energybench.train.evaluate import evaluate
from energybench.train.loop import fit, planned_steps
from energybench.train.precision import autocast_dtype, loss_scaler_state_bytes, prepare_backbone

TRACEBACK_TAIL_LINES = 25


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the suite asks for device: cuda but torch sees no CUDA device (try `energybench doctor`)")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def environment(device: torch.device) -> dict:
    import transformers

    env = {"energybench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "host": socket.gethostname(), "device": str(device),
           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        import peft

        env["peft"] = peft.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


def execute(spec: RunSpec, log: Callable[[str], None] = print) -> RunResult:
    """Run ``spec`` and return its row; an exception becomes a failed row, never a crash."""
    started = _now()
    base = dict(run_id=spec.run_id, suite=spec.suite, backbone=spec.backbone.display, task=spec.task.name,
                method=spec.method.display, method_name=spec.method.name, seed=spec.seed, config=spec.config(),
                started_at=started, role=spec.role, trial=spec.trial)
    try:
        row = _execute(spec, log)
        return RunResult(**base, **row, status="ok", finished_at=_now())
    except Exception as exc:  # noqa: BLE001 - recorded, and the grid goes on
        tail = "".join(traceback.format_exc().splitlines(keepends=True)[-TRACEBACK_TAIL_LINES:])
        return RunResult(**base, status="failed", error=f"{type(exc).__name__}: {exc}", traceback_tail=tail,
                         finished_at=_now())


def _execute(spec: RunSpec, log: Callable[[str], None]) -> dict:
    cfg = spec.training
    measure = MeasureSettings.model_validate(spec.measure)
    device = resolve_device(spec.device)
    seed_everything(spec.seed)
    data = load_task(spec.task.name, spec.task.data_dir, max_train_examples=cfg.max_train_examples)
    if cfg.max_eval_examples:
        data.validation, data.test = data.validation[: cfg.max_eval_examples], data.test[: cfg.max_eval_examples]
    backbone = load_backbone(spec.backbone.name, spec.backbone.path, seed=spec.seed, num_labels=data.spec.num_labels)
    prepare_backbone(backbone.model, cfg.precision, cfg.gradient_checkpointing)
    tokenizer, family = backbone.tokenizer, backbone.family
    if data.spec.generative and family != "causal":
        raise ValueError(f"task {data.spec.name!r} is scored by generation, defined on causal-LM backbones only; "
                         f"backbone {spec.backbone.name!r} is of the {family!r} family")
    total_steps = planned_steps(len(data.train), cfg)
    method_cls = load_method(spec.method.name)
    # The suite's own keys, not the resolved dump: a setting left out means "the family's default"
    # (e.g. lora's targets on an encoder); the values of the keys given are the same either way.
    method = method_cls(method_cls.Settings.model_validate(spec.method.settings_dict))
    model = method.apply(backbone.model, ApplyContext(total_steps=total_steps, seed=spec.seed, task_name=spec.task.name))
    trainable, total = count_parameters(model)
    log(f"  {trainable:,} of {total:,} parameters train ({100 * trainable / total:.3f}%); {total_steps} steps planned")

    first = training_batch(tokenizer, data.spec, data.train[: cfg.batch_size], cfg.max_source_length,
                           cfg.max_target_length, family)
    # seq2seq: the source and one label string (the forward that scores one candidate); encoder: the head's input
    infer_batch = training_batch(tokenizer, data.spec, data.test[: measure.latency_batch_size],
                                 cfg.max_source_length, cfg.max_target_length, family)
    accounting = _accounting(model, method, first, measure, cfg)

    model.to(device)
    windows: dict[str, dict] = {}
    with Meter(build_trackers(measure, devices=[device])) as meter:
        meter.begin_window("train")
        curve = CurveRecorder(meter, "train")
        pruning = _pruning(spec)
        result = fit(model, method, tokenizer, data, cfg, total_steps=total_steps, device=device, seed=spec.seed, log=log,
                     on_validation=curve if pruning is None else chain(curve, pruning), family=family)
        windows["train"] = meter.end_window("train")
        windows["train"].merge(step_time_stats(result.step_times_s, cfg.batch_size))

        meter.begin_window("eval")
        score, metrics = evaluate(model, tokenizer, data.spec, data.test, cfg.max_source_length,
                                  cfg.max_target_length, cfg.eval_batch_size, device, family=family)
        windows["eval"] = meter.end_window("eval")
        log(f"  test {data.spec.metric} {score:.2f}")

        if data.spec.generative and family == "causal":
            windows["generate"] = _generate_window(meter, model, tokenizer, data, cfg, measure, device)

        method_info = method.describe(model)
        batch = to_device(infer_batch, device)
        unmerged = None
        if method.overrides("for_inference"):
            unmerged = _latency(model, batch, measure, device).as_dict()
            model = method.for_inference(model)
        _count_inference_flops(accounting, model, batch, measure, cfg)
        meter.begin_window("inference")
        latency = _latency(model, batch, measure, device)
        windows["inference"] = meter.end_window("inference")
        windows["inference"].merge(latency)
        if unmerged is not None:
            windows["inference"]["unmerged"] = unmerged

    return dict(score=score, metrics=metrics, val_score=result.best_val_score, steps=result.steps,
                planned_steps=total_steps, epochs=result.epochs, stopped_early=result.stopped_early,
                trainable_params=trainable, total_params=total, windows=windows, accounting=accounting.as_dict(),
                method_info={**method_info, "history": result.history}, environment=environment(device),
                curve=curve.points, **({} if pruning is None else {"pruned_at_step": pruning.pruned_at}))


def _pruning(spec: RunSpec):
    """A search trial's pruner (run/prune.py), when its search asks for one."""
    payload = (spec.trial or {}).get(PRUNE_KEY)
    return MedianPruning(payload) if payload and payload.get("pruner") == "median" else None


def _generate_window(meter: Meter, model, tokenizer, data, cfg, measure: MeasureSettings, device):
    """The ``generate`` window: greedy generation for the latency batch's test prompts, with tokens per second.

    At most ``max_target_length`` new tokens per prompt; tokens counted are the
    answer tokens produced (EOS excluded), so tokens_per_s is answer throughput.
    """
    from energybench.train.causal import generate_answers

    examples = data.test[: measure.latency_batch_size]
    model.eval()
    meter.begin_window("generate")
    _, n_tokens, seconds = generate_answers(model, tokenizer, data.spec, examples, cfg.max_source_length,
                                            cfg.max_target_length, measure.latency_batch_size, device)
    window = meter.end_window("generate")
    figs = Figures()
    figs.put("prompts", len(examples))
    figs.put("tokens_generated", n_tokens)
    if n_tokens:
        figs.put("tokens_per_s", n_tokens / seconds)
    else:
        figs.null("tokens_per_s", "the model emitted EOS first for every prompt: no answer tokens to time")
    window.merge(figs)
    return window


def training_loss(method):
    """``loss(model, batch)``: the model's loss plus the method's regulariser, as the loop trains it and as
    the accounting (here and in ``estimate``) counts it."""
    has_reg = method.overrides("regularizer")

    def loss(model, batch):
        out = model(**batch).loss
        reg = method.regularizer(model) if has_reg else None
        return out if reg is None else out + reg

    return loss


def account_step(model, method, batch: dict, cfg, *, mode: str = "fake", semantics: str = "cuda"):
    """One training step of ``method`` accounted as the loop runs it at ``cfg`` (AdamW at its rate, autocast and
    loss scaler by its precision): the figures a run records, ``estimate`` prints and the GPU check divides
    its CUDA peak by."""
    return account_training_step(model, training_loss(method), batch,
                                 lambda params: torch.optim.AdamW(params, lr=cfg.learning_rate),
                                 mode=mode, semantics=semantics, autocast_dtype=autocast_dtype(cfg.precision),
                                 extra_state_bytes=loss_scaler_state_bytes(cfg.precision))


def _accounting_note(measure: MeasureSettings, cfg) -> str:
    return (f"{measure.accounting_mode} tensors, {measure.accounting_semantics.upper()} saved-tensor semantics, "
            f"{cfg.precision}{', gradient checkpointing' if cfg.gradient_checkpointing else ''} (DESIGN.md)")


def _accounting(model, method, train_batch: dict, measure: MeasureSettings, cfg) -> Figures:
    """Memory by parts and FLOPs of one training step on the run's first batch (modelled, deterministic)."""
    figs = Figures()
    if not measure.accounting:
        for name in ("mem_model_bytes", "train_flops"):
            figs.null(name, "accounting disabled in the suite (measure.accounting: false)")
        return figs
    cost = account_step(model, method, train_batch, cfg, mode=measure.accounting_mode,
                        semantics=measure.accounting_semantics)
    note = _accounting_note(measure, cfg) + f"; engine: {cost.engine}"
    for name, value in cost.memory.as_fields().items():
        figs.put(name, value, MODELLED, note)
    figs.put("train_flops", cost.train_flops, MODELLED, f"torch.utils.flop_counter, one training step; {note}")
    figs.values.update(accounting_mode=measure.accounting_mode, accounting_engine=cost.engine,
                       accounting_semantics=measure.accounting_semantics,
                       precision=cfg.precision, gradient_checkpointing=cfg.gradient_checkpointing)
    return figs


def _count_inference_flops(figs: Figures, model, batch: dict, measure: MeasureSettings, cfg) -> None:
    """FLOPs of one inference batch of the model as deployed (after ``for_inference``)."""
    if not measure.accounting:
        figs.null("infer_flops", "accounting disabled in the suite (measure.accounting: false)")
        return
    flops = account_inference(model, lambda m, b: m(**b), batch, mode=measure.accounting_mode,
                              semantics=measure.accounting_semantics, autocast_dtype=autocast_dtype(cfg.precision))
    figs.put("infer_flops", flops, MODELLED,
             f"torch.utils.flop_counter, one inference batch of the deployed model ({measure.accounting_mode} tensors)")


def _latency(model, batch: dict, measure: MeasureSettings, device: torch.device) -> Figures:
    """Latency of one inference forward (scoring one label) at the suite's batch size."""
    model.eval()
    with torch.no_grad():
        return measure_latency(lambda: model(**batch), measure.latency_warmup, measure.latency_repeats, sync=device)
