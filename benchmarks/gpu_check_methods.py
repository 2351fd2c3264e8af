"""The ``methods`` part of ``benchmarks/gpu_check.py``: every registered method, fp32 and bf16-mixed.

Each (method, precision) trains ``method_steps`` steps with energybench's own loop (``fit``, the method's
hooks included) inside one Meter window: CUDA peak allocated/reserved (measured), ``mem_model_bytes`` from
the accounting (modelled, fp32), their ratio, median step time, samples/s, and GPU energy per step from the
counter. A row is saved as soon as it is measured, so a part cut at its limit keeps the finished rows.
"""

from __future__ import annotations

import gc

from gpu_check_parts import MEASURED, MODELLED, Section, fixed_task, loss_fn, settings


def _precision_plan(device, precision: str):
    """How fit runs at ``precision``: the loop's own setting if it has one, else torch.autocast around fit."""
    import contextlib

    import torch

    from energybench.train.settings import TrainingSettings

    if precision == "fp32":
        return {}, contextlib.nullcontext(), "fp32"
    if "precision" in TrainingSettings.model_fields:
        return {"precision": "bf16-mixed"}, contextlib.nullcontext(), "TrainingSettings.precision"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError("this GPU does not support bf16")
    return {}, torch.autocast(device.type, dtype=torch.bfloat16), "torch.autocast(bfloat16) around fit (the loop has no precision setting)"


def _modelled_bytes(model, method, tokenizer, data, opts) -> tuple[int, bool]:
    """mem_model_bytes at the check's batch, carried along the line through batches b1 < b2 (exact at fixed
    lengths); the third point b0 checks the line."""
    import torch

    from energybench.measure.accounting import model_memory
    from energybench.train.batches import training_batch

    def at(b):
        batch = training_batch(tokenizer, data.spec, data.train[:b], opts["src_len"], opts["tgt_len"])
        return model_memory(model, loss_fn(method, batch), lambda p: torch.optim.AdamW(p, lr=1e-3)).total_bytes

    b0, b1, b2 = opts["account_batches"]
    m0, m1, m2 = at(b0), at(b1), at(b2)
    slope = (m2 - m1) / (b2 - b1)
    exact = abs(m1 - slope * (b1 - b0) - m0) < 1
    return int(round(m2 + slope * (opts["batch"] - b2))), exact


def part_methods(sec: Section, opts) -> None:
    import torch

    from energybench.measure.latency import step_time_stats
    from energybench.measure.meter import Meter
    from energybench.measure.trackers import build_trackers
    from energybench.methods.base import ApplyContext, count_parameters
    from energybench.models.backbones import load_backbone
    from energybench.registry import load_method, method_names
    from energybench.train.loop import fit
    from energybench.train.settings import TrainingSettings

    device = torch.device(opts["device"])
    steps, b = opts["method_steps"], opts["batch"]
    data = fixed_task(b * steps, opts["src_len"])
    rows = sec.data.setdefault("rows", [])
    sec.note(f"{opts['backbone']}, batch {b}, source length {opts['src_len']}, target length {opts['tgt_len']}, "
             f"{steps} steps per method and precision; mem_model_bytes is the fp32 accounting "
             f"(modelled, from batches {opts['account_batches']} carried to {b}); the window includes one "
             "4-example validation at the end of fit")
    for name in method_names():
        modelled = None
        for precision in [p for p in opts["precisions"] if p == "fp32" or opts["bf16_methods"] is None
                          or name in opts["bf16_methods"]]:
            row = {"method": name, "precision": precision, "reasons": {}, "how": {}}
            rows.append(row)

            def put(k, v, how=MEASURED, reason=None):
                row[k] = v
                (row["how"].__setitem__(k, how) if v is not None else
                 row["reasons"].__setitem__(k, reason + (" (dry run on CPU)" if opts["dry_run"] and "dry run" not in reason
                                                       else "")))
            try:
                cls = load_method(name)
                method = cls(cls.Settings())
                bb = load_backbone(opts["backbone"], seed=0)
                model = method.apply(bb.model, ApplyContext(total_steps=steps, seed=0, task_name="synth-sst2"))
                put("trainable_params", count_parameters(model)[0])
                if modelled is None:
                    modelled = _modelled_bytes(model, method, bb.tokenizer, data, opts)
                put("mem_model_bytes", modelled[0], MODELLED,
                    None if modelled[1] else "the accounting was not linear in the batch: extrapolation approximate")
                extra, ctx, via = _precision_plan(device, precision)
                row["precision_via"] = via
                cfg = TrainingSettings(learning_rate=1e-4, batch_size=b, max_epochs=1, max_steps=steps,
                                       eval_every_steps=None, patience=None, max_source_length=opts["src_len"],
                                       max_target_length=opts["tgt_len"], eval_batch_size=4, **extra)
                model.to(device)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                with Meter(build_trackers(settings(), devices=[device])) as meter:
                    meter.begin_window("train")
                    with ctx:
                        res = fit(model, method, bb.tokenizer, data, cfg, total_steps=steps, device=device, seed=0,
                                  log=lambda s: None)
                    w = meter.end_window("train")
                st = step_time_stats(res.step_times_s, b).as_dict()
                put("steps", res.steps)
                for k in ("step_time_s", "samples_per_s"):
                    put(k, st.get(k), MEASURED, st["reasons"].get(k))
                put("cuda_peak_allocated_bytes", w.get("peak_gpu_mem_bytes"), MEASURED,
                    w["reasons"].get("peak_gpu_mem_bytes"))
                put("cuda_peak_reserved_bytes", w.get("peak_gpu_reserved_bytes"), MEASURED,
                    w["reasons"].get("peak_gpu_reserved_bytes"))
                e = w.get("gpu_energy_kwh")
                put("energy_per_step_kwh", None if e is None else e / res.steps, MEASURED,
                    "GPU energy counter Δ / steps" if e is not None else w["reasons"].get("gpu_energy_kwh"))
                a = row.get("cuda_peak_allocated_bytes")
                put("allocated_over_modelled", None if a is None else a / modelled[0], MEASURED,
                    "cuda_peak_allocated_bytes / mem_model_bytes" if a is not None
                    else "no CUDA peak: " + str(row["reasons"].get("cuda_peak_allocated_bytes")))
                row["status"] = "ok"
            except Exception as exc:  # noqa: BLE001 - one method's failure must not hide the others
                row["status"], row["error"] = "failed", f"{type(exc).__name__}: {exc}"
            finally:
                model = bb = method = None
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            sec.save()
