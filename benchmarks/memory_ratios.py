"""Training-step memory and FLOPs of every method, as ratios to full fine-tuning.

For each backbone (T5 shapes with random weights, nothing downloaded) and
each registered method, one training step is accounted the way every run is
(energybench.measure.accounting, DESIGN.md "mem_model_bytes"): parameters +
gradients + AdamW state + tensors autograd saves for backward, and the step's
FLOPs from torch's FlopCounterMode. READ and LST are added from their modules
if they are not registered yet, and LST also with the authors' t5-base layer
setting (side blocks kept for layers [1,2,3,5,6,7,9,10,11], dropped for 0, 4, 8). The table is what a reader holds against READ's "−56 % training
memory" and LST's "69 % memory saving" versus full fine-tuning.

Batch: READ trains with a total batch of 96 (its Appendix D.1; the per-GPU
split of its Table 6 is not in our copy of the paper) and states no sequence
length; LST's scripts use max length 128. We use source length 128 and
target length 4 (a GLUE label plus EOS). A step at batch 96 on t5-base costs
minutes of CPU per method, so the step is *measured* at batches b/4, b/2 and
b (--batch, default 4) and every count is carried to batch 96 along the line
through b/2 and b. At fixed sequence lengths every saved tensor and every
matmul is either proportional to the batch or independent of it, so the fit
is exact; the script checks that per method (the line through b/4 and b/2
must hit the measurement at b to the byte and the FLOP) and prints the
deviation where it does not. Both tables are printed; the extrapolated one is
labelled as such.

With a CUDA device the script also runs one real training step per method at
batch 96 and records torch.cuda.max_memory_allocated (allocator overhead,
CUDA workspaces and the logits' softmax temporaries included), else null with
the reason.

    python benchmarks/memory_ratios.py [--out reports/memory_ratios.md] [--batch 8] [--target-batch 96]
"""

from __future__ import annotations

import argparse
import copy
import gc
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from energybench.methods.base import ApplyContext, Method, count_parameters
from torch.utils.flop_counter import FlopCounterMode

from energybench.measure.accounting import model_memory
from energybench.models.backbones import TINY_PRESETS, tiny_t5_config
from energybench.registry import load_method, method_names

PARTS = ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes")


@dataclass
class Row:
    """One method on one backbone: counts per batch size, or why it has none."""

    label: str
    trainable: int = 0
    total: int = 0
    by_batch: dict[int, dict[str, int]] = field(default_factory=dict)
    affine_error: dict[str, int] = field(default_factory=dict)  # fit through b/4, b/2 minus measured at b
    cuda_peak_bytes: int | None = None
    cuda_reason: str = ""
    error: str = ""


def methods_to_run(n_layers: int) -> list[tuple[str, Method]]:
    """Every registered method with its defaults, READ and LST even if unregistered, LST as the authors ran it."""
    names = method_names()
    out = [(name, load_method(name)()) for name in ["full_ft", *[n for n in names if n != "full_ft"]] if name in names]
    if "read" not in names:
        from energybench.methods.read import READ
        out.append(("read", READ()))
    if "lst" not in names:
        from energybench.methods.lst import LadderSideTuning
        out.append(("lst", LadderSideTuning()))
    from energybench.methods.lst import AUTHORS_T5_BASE_SIDE_LAYERS, LadderSideTuning
    if n_layers > max(AUTHORS_T5_BASE_SIDE_LAYERS):
        # The authors' list holds the side blocks *kept* (9 of 12; layers 0, 4, 8 have none).
        out.append(("lst (9 of 12 side blocks, authors' t5-base)",
                    LadderSideTuning(LadderSideTuning.Settings(side_layers=AUTHORS_T5_BASE_SIDE_LAYERS))))
    return out


def make_batch(batch: int, src_len: int, tgt_len: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, src_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.randint(3, vocab, (batch, tgt_len), generator=g)}


def account(model, method: Method, batch: dict) -> dict[str, int]:
    """One accounted training step: memory by parts and its FLOPs.

    FlopCounterMode wraps model_memory's forward + backward (the AdamW step
    adds no matmul FLOPs), which counts exactly what
    accounting.train_step_flops counts without running the step twice.
    """
    has_reg = method.overrides("regularizer")

    def loss_fn(m):
        loss = m(**batch).loss
        reg = method.regularizer(m) if has_reg else None
        return loss if reg is None else loss + reg

    counter = FlopCounterMode(display=False)
    with counter:
        mem = model_memory(model, loss_fn, lambda p: torch.optim.AdamW(p, lr=1e-3))
    return {**{k: getattr(mem, k) for k in PARTS}, "total_bytes": mem.total_bytes,
            "train_flops": int(counter.get_total_flops())}


def affine(small: dict[str, int], large: dict[str, int], b_small: int, b_large: int, b_target: int) -> dict[str, int]:
    """Each count carried to b_target along the line through (b_small, small) and (b_large, large)."""
    return {k: large[k] + (large[k] - small[k]) * (b_target - b_large) // (b_large - b_small) for k in large}


def cuda_peak(model, batch: dict) -> tuple[int | None, str]:
    if not torch.cuda.is_available():
        return None, "no CUDA device on this machine"
    try:
        model = model.cuda().train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        cuda_batch = {k: v.cuda() for k, v in batch.items()}
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        model(**cuda_batch).loss.backward()
        opt.step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), "one real training step (forward, backward, AdamW step)"
    except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - depends on the device
        return None, f"out of memory at this batch: {str(exc).splitlines()[0]}"
    finally:
        model.cpu()
        torch.cuda.empty_cache()


def run_preset(preset: str, args) -> tuple[list[Row], dict]:
    cfg = tiny_t5_config(preset, vocab_size=args.vocab_size)
    from transformers import T5ForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = T5ForConditionalGeneration(cfg)
    b_large, b_small, b_check = args.batch, args.batch // 2, args.batch // 4
    batches = {b: make_batch(b, args.src_len, args.tgt_len, args.vocab_size) for b in (b_check, b_small, b_large)}
    rows = []
    for label, method in methods_to_run(cfg.num_layers):
        row = Row(label)
        t0 = time.perf_counter()
        try:
            model = method.apply(copy.deepcopy(base), ApplyContext(total_steps=1000, seed=0, task_name="memory_ratios"))
            row.trainable, row.total = count_parameters(model)
            for b, batch in batches.items():
                row.by_batch[b] = account(model, method, batch)
            row.by_batch[args.target_batch] = affine(row.by_batch[b_small], row.by_batch[b_large], b_small, b_large,
                                                     args.target_batch)
            predicted = affine(row.by_batch[b_check], row.by_batch[b_small], b_check, b_small, b_large)
            row.affine_error = {k: predicted[k] - row.by_batch[b_large][k] for k in predicted
                                if predicted[k] != row.by_batch[b_large][k]}
            if torch.cuda.is_available():
                row.cuda_peak_bytes, row.cuda_reason = cuda_peak(
                    model, make_batch(args.target_batch, args.src_len, args.tgt_len, args.vocab_size))
            else:
                row.cuda_reason = "no CUDA device on this machine"
        except Exception as exc:  # one method failing must not lose the others' figures
            row.error = f"{type(exc).__name__}: {exc}"
        finally:
            model = None
            gc.collect()
        print(f"  {preset:16s} {label:40s} {time.perf_counter() - t0:6.1f} s {row.error}", file=sys.stderr, flush=True)
        rows.append(row)
    info = {"d_model": cfg.d_model, "layers": cfg.num_layers, "heads": cfg.num_heads, "d_ff": cfg.d_ff,
            "params": sum(p.numel() for p in base.parameters()), "b_small": b_small, "b_large": b_large,
            "b_check": b_check}
    return rows, info


def _mib(n: int | None) -> str:
    return "null" if n is None else f"{n / 2**20:,.1f}"


def _change(a: int, b: int) -> str:
    """a relative to b as READ writes it: "−56 %" is 44 % of the reference."""
    text = f"{a / b - 1:+.0%}"
    return "±0 %" if text in ("+0%", "-0%") else text.replace("-", "−").replace("%", " %")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")[:160]


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "—"


def _check(r: Row, b_large: int) -> str:
    if not r.affine_error:
        return "exact"
    worst = max(r.affine_error.values(), key=abs)
    shift = f"{worst / 2**20:+,.1f}".replace("-", "−")
    return f"not affine: the fit misses batch {b_large} by {shift} MiB ({', '.join(sorted(r.affine_error))})"


def table(rows: list[Row], batch: int, parts: bool, check_batch: int | None = None) -> list[str]:
    ref = next((r for r in rows if r.label == "full_ft" and not r.error), None)
    lora = next((r for r in rows if r.label == "lora" and not r.error), None)
    head = ["method", "trainable params"]
    if parts:
        head += ["params MiB", "grads MiB", "optimizer MiB"]
    head += ["activations MiB", "mem_model MiB", "mem ÷ full_ft", "mem change vs full_ft", "activations ÷ lora",
             "train GFLOPs", "FLOPs ÷ full_ft"]
    if check_batch:
        head += ["affine check"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.error:
            lines.append("| " + " | ".join([r.label, *["—"] * (len(head) - 2), "error: " + _cell(r.error)]) + " |")
            continue
        c = r.by_batch[batch]
        cells = [r.label, f"{r.trainable:,}"]
        if parts:
            cells += [_mib(c["params_bytes"]), _mib(c["grads_bytes"]), _mib(c["optimizer_bytes"])]
        full = ref.by_batch[batch] if ref else None
        cells += [_mib(c["activations_bytes"]), _mib(c["total_bytes"]),
                  _ratio(c["total_bytes"], full["total_bytes"]) if full else "—",
                  _change(c["total_bytes"], full["total_bytes"]) if full else "—",
                  _ratio(c["activations_bytes"], lora.by_batch[batch]["activations_bytes"]) if lora else "—",
                  f"{c['train_flops'] / 1e9:,.1f}",
                  _ratio(c["train_flops"], full["train_flops"]) if full else "—"]
        if check_batch:
            cells.append(_check(r, check_batch))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cuda_table(rows: list[Row], target: int) -> list[str]:
    ref = next((r for r in rows if r.label == "full_ft" and r.cuda_peak_bytes), None)
    lines = [f"| method | peak CUDA MiB (batch {target}) | ÷ full_ft | how |", "|---|---|---|---|"]
    for r in rows:
        ratio = _ratio(r.cuda_peak_bytes, ref.cuda_peak_bytes) if (ref and r.cuda_peak_bytes) else "—"
        lines.append(f"| {r.label} | {_mib(r.cuda_peak_bytes)} | {ratio} | {_cell(r.error or r.cuda_reason)} |")
    return lines


def report(results: dict[str, tuple[list[Row], dict]], args, elapsed_s: float) -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    import transformers

    out = [
        "# Training-step memory and FLOPs, as ratios to full fine-tuning",
        "",
        f"`python benchmarks/memory_ratios.py --batch {args.batch} --target-batch {args.target_batch}` — "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{device}, {elapsed_s / 60:.1f} min.",
        "",
        "What is counted (DESIGN.md, `mem_model_bytes`): every parameter (frozen ones too), the gradients of the "
        "trainable ones, AdamW's state after one step, and the tensors autograd saves for backward (each storage "
        "once) — one training step, deterministic, the same on every machine. FLOPs: torch's FlopCounterMode over "
        "forward + backward. Each method runs with its default settings; READ and LST are ours (methods/read.py, "
        "methods/lst.py), LST also with the layer setting of its authors' t5-base script (9 of 12 side blocks kept).",
        "",
        f"Backbones: the presets' T5 shapes with random weights and T5's vocabulary of {args.vocab_size:,} "
        "(shared input/output embedding, so t5-base-random has the public t5-base's parameter count). "
        f"Batch: source length {args.src_len}, target length {args.tgt_len}. READ's total batch is 96 "
        "(its Appendix D.1); it states no sequence length, LST's scripts use 128.",
        "",
        "Published figures to hold these against (measured as peak GPU memory on V100s, so they also contain the "
        "CUDA context, allocator slack and kernel workspaces that this accounting leaves out):",
        "",
        "- READ (arXiv 2305.15348): −56 % training memory versus full fine-tuning, T5-base on GLUE.",
        "- LST (Sung et al., NeurIPS 2022): 69 % memory saving versus full fine-tuning, T5-base, batch 100, "
        "length 128, with layer dropping (other PETL methods: up to ~30 %).",
        "",
    ]
    for preset, (rows, info) in results.items():
        out += [f"## {preset}", "",
                f"d_model {info['d_model']}, d_ff {info['d_ff']}, {info['layers']}+{info['layers']} layers, "
                f"{info['heads']} heads, {info['params'] / 1e6:.1f} M parameters.", "",
                f"### At READ's batch {args.target_batch} — extrapolated (affine fit through the measured "
                f"batches {info['b_small']} and {info['b_large']})", "",
                f"\"affine check\": the same fit through batches {info['b_check']} and {info['b_small']}, compared "
                f"with the measurement at batch {info['b_large']}; \"exact\" means every byte and FLOP count matched.", ""]
        out += table(rows, args.target_batch, parts=False, check_batch=info["b_large"])
        out += ["", f"### Measured at batch {info['b_large']} (reduced from {args.target_batch} so that "
                f"t5-base finishes in minutes on 2 CPU cores)", ""]
        out += table(rows, info["b_large"], parts=True)
        out += ["", "### Peak CUDA memory, one real step", ""]
        out += cuda_table(rows, args.target_batch)
        out += [""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the Markdown report here")
    ap.add_argument("--presets", nargs="+", default=["t5-small-random", "t5-base-random"], choices=sorted(TINY_PRESETS))
    ap.add_argument("--batch", type=int, default=4, help="largest batch measured; b/2 and b/4 are measured too")
    ap.add_argument("--target-batch", type=int, default=96, help="batch the figures are carried to (READ's: 96)")
    ap.add_argument("--src-len", type=int, default=128)
    ap.add_argument("--tgt-len", type=int, default=4)
    ap.add_argument("--vocab-size", type=int, default=32128, help="32128 = T5's SentencePiece vocabulary")
    args = ap.parse_args(argv)
    if args.batch < 4 or args.batch % 4:
        ap.error("--batch must be a multiple of 4 (batches b/4, b/2 and b are measured)")
    t0 = time.perf_counter()
    results = {p: run_preset(p, args) for p in args.presets}
    text = report(results, args, time.perf_counter() - t0)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
