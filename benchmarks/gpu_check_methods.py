"""The ``methods`` part of ``benchmarks/gpu_check.py``: every registered method, fp32 and bf16-mixed.

Each (method, precision) trains ``method_steps`` steps with energybench's own loop (``fit``, the method's
hooks included) inside one Meter window: CUDA peak allocated/reserved (measured), ``mem_model_bytes`` and its
parts from the accounting (modelled), their ratio, median step time, samples/s, and GPU energy per step from
the counter. The modelled figure is the one a run of the same setting records and ``energybench estimate``
prints: fake tensors, CUDA saved-tensor semantics, at the check's batch and the row's precision. A row is saved
as soon as it is measured, so a part cut at its limit keeps the finished rows.
"""

from __future__ import annotations

import gc

from gpu_check_parts import MEASURED, MODELLED, Section, fixed_task, settings


def part_methods(sec: Section, opts) -> None:
    import torch

    from energybench.measure.latency import step_time_stats
    from energybench.measure.meter import Meter
    from energybench.measure.trackers import build_trackers
    from energybench.methods.base import ApplyContext, count_parameters
    from energybench.models.backbones import load_backbone
    from energybench.registry import load_method, method_names
    from energybench.run.execute import account_step
    from energybench.train.batches import training_batch
    from energybench.train.loop import fit
    from energybench.train.settings import TrainingSettings

    device = torch.device(opts["device"])
    steps, b = opts["method_steps"], opts["batch"]
    data = fixed_task(b * steps, opts["src_len"])
    rows = sec.data.setdefault("rows", [])
    sec.note(f"{opts['backbone']}, batch {b}, source length {opts['src_len']}, target length {opts['tgt_len']}, "
             f"{steps} steps per method and precision; mem_model_bytes and its parts are the accounting of "
             "the row's setting (modelled: fake tensors, CUDA saved-tensor semantics, as a run records it); the "
             "window includes one 4-example validation at the end of fit")
    for name in method_names():
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
                cfg = TrainingSettings(learning_rate=1e-4, batch_size=b, max_epochs=1, max_steps=steps,
                                       eval_every_steps=None, patience=None, max_source_length=opts["src_len"],
                                       max_target_length=opts["tgt_len"], eval_batch_size=4, precision=precision)
                # every batch of the fixed task has the first one's shape
                first = training_batch(bb.tokenizer, data.spec, data.train[:b], opts["src_len"], opts["tgt_len"])
                cost = account_step(model, method, first, cfg)  # as a run of this setting records it
                modelled = cost.memory.total_bytes
                for k, v in cost.memory.as_fields().items():
                    put(k, v, MODELLED)
                row["accounting_engine"] = cost.engine
                model.to(device)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                with Meter(build_trackers(settings(), devices=[device])) as meter:
                    meter.begin_window("train")
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
                put("allocated_over_modelled", None if a is None else a / modelled, MEASURED,
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
