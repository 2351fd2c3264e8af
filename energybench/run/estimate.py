"""``energybench estimate``: will it fit, what will it cost — before a GPU hour is spent.

For every (backbone, method) of a suite, one training step and one inference
batch are accounted exactly as a run accounts them (fake tensors, CUDA
saved-tensor semantics by default, the suite's precision and gradient
checkpointing), but without training, data or weights: the backbone is built
from its *config* alone (a tiny preset, a local ``config.json``, or the hub's
config when online) on the meta device, so t5-base at batch 96 takes about a
second a method and no real parameter is ever allocated.

The batch is the worst case a run can meet: ``batch_size`` sequences of
``max_source_length`` source tokens and ``max_target_length`` label tokens, no
padding (runs pad each batch to its longest example, so they save at most
this much). The inference batch is ``measure.latency_batch_size`` sequences
of the same shape, of the model as deployed (``for_inference``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from energybench.measure.accounting import account_inference
from energybench.methods.base import ApplyContext, count_parameters
from energybench.models.backbones import byte_tokenizer
from energybench.registry import load_method
from energybench.run.execute import account_step
from energybench.run.plan import resolved_training
from energybench.suite import BackboneEntry, Suite
from energybench.train.precision import autocast_dtype, backbone_dtype

FIGURES = ("trainable_params", "mem_params_bytes", "mem_grads_bytes", "mem_optimizer_bytes",
           "mem_activations_bytes", "mem_model_bytes", "train_flops", "infer_flops")
CONTEXT = ("backbone", "method", "batch_size", "precision", "gradient_checkpointing", "accounting_semantics")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class EstimateError(ValueError):
    """Bad input to ``estimate`` (a size, a backbone without a config); the CLI exits 2."""


def parse_size(text: str) -> int:
    """Bytes in "80GB" (SI, 80·10⁹), "80GiB" or "80G" (binary, 80·2³⁰), "81920MiB", or a plain number."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text or "")
    if not m or m.group(2).upper() not in _UNITS:
        raise EstimateError(f"--gpu-memory {text!r}: expected a size such as 80GB, 80GiB or 81920MiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def backbone_config(entry: BackboneEntry, num_labels: int | None = None):
    """The backbone's transformers config: a preset's (``shape:`` names a shape-only preset that stands in for a
    hub model), a local folder's config.json, or the hub's (config only, when online)."""
    from energybench.models.family import all_presets, family_named

    preset = all_presets().get(entry.shape or ("" if entry.path else entry.name))
    if preset is not None:
        return family_named(preset.family).preset_config(preset, len(byte_tokenizer()), num_labels)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(entry.path or entry.name)
    except (OSError, ValueError) as exc:
        raise EstimateError(f"backbone {entry.display!r}: no config.json found locally or on the hub "
                            f"(set backbone.path to a folder with config.json, or backbone.shape to a shape "
                            f"preset such as llama-3.2-3b-shape): {exc}") from exc
    if num_labels:
        config.num_labels = num_labels
    return config


def _meta_backbone(config, dtype: torch.dtype, gradient_checkpointing: bool):
    """The model built from ``config`` on the meta device, as its family loads it: shapes and dtypes only, no
    weights allocated. The accounting turns it into fake tensors (fake.fake_copy), which — unlike meta tensors —
    run the step."""
    import transformers

    from energybench.models.family import family_of_config

    auto = getattr(transformers, family_of_config(config).auto_model)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = auto.from_config(config, dtype=dtype)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        model.enable_input_require_grads()
    return model


def _worst_case_batch(config, batch: int, src: int, tgt: int) -> dict[str, torch.Tensor]:
    """The largest batch a run of this family can meet: no padding.

    seq2seq: ``src`` source tokens and ``tgt`` label tokens; causal: prompt and continuation in one sequence of
    ``src + tgt`` tokens, the prompt's labels −100; encoder: ``src`` tokens and one class label each."""
    from energybench.models.family import family_of_config

    vocab = int(getattr(config, "vocab_size", 32000))
    family = family_of_config(config).name
    if family == "causal":
        ids = torch.full((batch, src + tgt), min(5, vocab - 1), dtype=torch.long)
        labels = ids.clone()
        labels[:, :src] = -100
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    ids = torch.full((batch, src), min(5, vocab - 1), dtype=torch.long)
    if family == "encoder":
        labels = (torch.zeros(batch, dtype=torch.float) if getattr(config, "num_labels", 2) == 1
                  else torch.zeros(batch, dtype=torch.long))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.full((batch, tgt), min(6, vocab - 1), dtype=torch.long)}


def estimate_suite(suite: Suite, *, batch_size: int | None = None, gpu_memory: int | None = None,
                   source_length: int | None = None, target_length: int | None = None,
                   semantics: str | None = None, progress: Callable[[str], None] | None = None,
                   jobs: int | None = None) -> list[dict]:
    """One row per (backbone, method): the figures of :data:`FIGURES`, the context of :data:`CONTEXT`
    (and ``fits`` with ``gpu_memory``). A method that cannot be accounted gets null figures and ``error``.

    Rows are independent, so ``jobs`` worker processes (default: one per core, at most one per row) account
    them side by side; the rows come back in the suite's order whatever finishes first."""
    for flag, value in (("--batch-size", batch_size), ("--source-length", source_length),
                        ("--target-length", target_length)):
        if value is not None and value < 1:  # 0 would otherwise read as "not given"
            raise EstimateError(f"{flag} {value}: must be at least 1")
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    semantics = semantics or suite.measure.accounting_semantics
    num_labels = _num_labels(suite)
    configs = {b.display: backbone_config(b, num_labels) for b in suite.backbones}
    tasks = [_Task(configs[b.display], b.display, m, resolved_training(suite, m), batch_size, source_length,
                   target_length, suite.measure.latency_batch_size, semantics)
             for b in suite.backbones for m in suite.methods]
    rows: list[dict | None] = [None] * len(tasks)
    for done, (i, row, seconds) in enumerate(_in_workers(tasks, _worker_count(jobs, len(tasks))), 1):
        if gpu_memory is not None:
            row["fits"] = None if row["mem_model_bytes"] is None else row["mem_model_bytes"] <= gpu_memory
        rows[i] = row
        status = row.get("error") or f"{row['mem_model_bytes'] / 2**20:,.1f} MiB"
        progress(f"[{done}/{len(tasks)}] {row['backbone']} · {row['method']}: {status} ({seconds:.1f} s)")
    return rows


@dataclass
class _Task:
    config: object
    backbone: str
    method: object  # MethodEntry
    cfg: object  # TrainingSettings
    batch_size: int | None
    source_length: int | None
    target_length: int | None
    infer_batch: int
    semantics: str

    def row(self) -> dict:
        cfg = self.cfg
        row = {"backbone": self.backbone, "method": self.method.display, "batch_size": self.batch_size or cfg.batch_size,
               "precision": cfg.precision, "gradient_checkpointing": cfg.gradient_checkpointing,
               "accounting_semantics": self.semantics}
        try:
            row.update(estimate_one(self.config, self.method, cfg, row["batch_size"],
                                    self.source_length or cfg.max_source_length,
                                    self.target_length or cfg.max_target_length, self.infer_batch, self.semantics))
        except Exception as exc:  # noqa: BLE001 - one method's failure is its row, the table goes on
            row.update({k: None for k in FIGURES}, error=f"{type(exc).__name__}: {exc}")
        return row


def _worker_count(jobs: int | None, n_tasks: int) -> int:
    if jobs is not None and jobs < 1:
        raise EstimateError(f"--jobs {jobs}: must be at least 1")
    return max(1, min(jobs or os.cpu_count() or 1, n_tasks))


_TASKS: list[_Task] = []  # what forked workers read (inherited, not pickled: configs and entries stay as they are)


def _timed_row(i: int) -> tuple[int, dict, float]:
    t0 = time.perf_counter()
    return i, _TASKS[i].row(), time.perf_counter() - t0


def _in_workers(tasks: list[_Task], workers: int):
    """(index, row, seconds) per task as each finishes: in this process, or in ``workers`` forked ones. Fork
    (Linux) shares the imported modules, so a worker starts in milliseconds; elsewhere rows run here."""
    global _TASKS
    _TASKS = tasks
    if workers == 1 or "fork" not in mp.get_all_start_methods():
        yield from (_timed_row(i) for i in range(len(tasks)))
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    _meta_backbone(tasks[0].config, torch.float32, False)  # the model classes import once, before the fork
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=torch.set_num_threads,
                             initargs=(1,)) as pool:
        futures = [pool.submit(_timed_row, i) for i in range(len(tasks))]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool as exc:  # a worker killed (out of memory?): say so instead of waiting forever
            raise EstimateError(f"an estimate worker process died ({exc}); the host may be out of memory — "
                                "try --jobs 1") from exc


def _num_labels(suite: Suite) -> int | None:
    """The classification head's size for encoder backbones: the suite's first task's (its label count)."""
    from energybench.tasks.loading import task_spec

    return task_spec(suite.tasks[0].name).num_labels


def _apply_on_meta(config, entry, cfg):
    """(model, method) with the method attached to a meta-device backbone.

    An initialisation that reads weights (LST's magnitude pruning picks rows
    by their values) cannot run on meta tensors; such a method is attached
    with ``init: random`` instead, which builds the same shapes (LST keeps the
    pruned indices only to describe them), so the accounting is unchanged.
    """
    cls = load_method(entry.name)
    settings = entry.settings_dict
    for attempt in range(2):
        method = cls(cls.Settings.model_validate(settings))
        model = _meta_backbone(config, backbone_dtype(cfg.precision), cfg.gradient_checkpointing)
        try:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                return method.apply(model, ApplyContext(total_steps=1000, seed=0)), method
        except NotImplementedError as exc:
            if attempt or "meta tensor" not in str(exc) or "init" not in cls.Settings.model_fields:
                raise
            settings = {**settings, "init": "random"}
    raise AssertionError("unreachable")


def estimate_one(config, entry, cfg, batch: int, src: int, tgt: int, infer_batch: int, semantics: str) -> dict:
    """The figures of one (backbone config, method entry, training settings) at the given batch shape."""
    model, method = _apply_on_meta(config, entry, cfg)
    trainable, _ = count_parameters(model)
    cost = account_step(model, method, _worst_case_batch(config, batch, src, tgt), cfg, mode="fake",
                        semantics=semantics)
    if method.overrides("for_inference"):
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = method.for_inference(model)
    infer = account_inference(model, lambda m, b: m(**b), _worst_case_batch(config, infer_batch, src, tgt),
                              mode="fake", semantics=semantics, autocast_dtype=autocast_dtype(cfg.precision))
    return {"trainable_params": trainable, **cost.memory.as_fields(), "train_flops": cost.train_flops,
            "infer_flops": infer}


def render(rows: list[dict], fmt: str) -> str:
    """The rows as a Markdown table (MiB and GFLOPs for reading), CSV or JSON (exact integers)."""
    import csv
    import io
    import json

    keys = [*CONTEXT[:2], *FIGURES, *CONTEXT[2:]] + (["fits"] if any("fits" in r for r in rows) else [])
    if fmt == "json":
        return json.dumps([{k: r.get(k) for k in keys} for r in rows], indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys + ["error"], extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    if fmt != "md":
        raise EstimateError(f"--format {fmt!r}: choose md, csv or json")
    mib = lambda v: "—" if v is None else f"{v / 2**20:,.1f}"  # noqa: E731
    gfl = lambda v: "—" if v is None else f"{v / 1e9:,.1f}"  # noqa: E731
    head = ["backbone", "method", "trainable", "params MiB", "grads MiB", "optimizer MiB", "activations MiB",
            "total MiB", "train GFLOPs", "infer GFLOPs"] + (["fits"] if "fits" in keys else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["backbone"], r["method"], "—" if r["trainable_params"] is None else f"{r['trainable_params']:,}",
                 *(mib(r[k]) for k in FIGURES[1:6]), gfl(r["train_flops"]), gfl(r["infer_flops"])]
        if "fits" in keys:
            cells.append({True: "yes", False: "no", None: "—"}[r.get("fits")])
        lines.append("| " + " | ".join(cells) + " |")
    first = rows[0] if rows else {}
    lines.append("")
    lines.append(f"Modelled (fake tensors, {str(first.get('accounting_semantics', 'cuda')).upper()} saved-tensor semantics): "
                 f"batch {first.get('batch_size')}, precision {first.get('precision')}, gradient checkpointing "
                 f"{'on' if first.get('gradient_checkpointing') else 'off'}; MiB = 2^20 bytes. Allocator overhead, "
                 "the CUDA context and kernel workspaces are not included.")
    lines += [f"- {r['backbone']} · {r['method']}: {r['error']}" for r in rows if r.get("error")]
    return "\n".join(lines) + "\n"


__all__ = ["CONTEXT", "FIGURES", "EstimateError", "estimate_suite", "parse_size", "render"]
