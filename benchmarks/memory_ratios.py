"""Training-step memory of every method vs full fine-tuning at READ's real batch, from `estimate` (no extrapolation).

Until 0.2 this script measured real CPU steps at small batches and carried
them to batch 96 along a line; it now accounts batch 96 directly on
fake tensors (energybench.run.estimate, CUDA saved-tensor semantics), with
the public T5 configs' dropout (0.1), in fp32, bf16-mixed and bf16, with and
without gradient checkpointing. Source length 128, target length 4 (a GLUE
label plus EOS), as in memory_ratios.py.

    python benchmarks/memory_ratios.py [--backbone t5-base-random] [--out reports/memory_ratios.md]

LST appears twice on T5 shapes: at full depth and with the authors' t5-base side layers (9 of 12 side
blocks kept).

Decoder-only shapes, as peft's method comparison trains Llama (weights in bfloat16, batch 4, 768 tokens):

    python benchmarks/memory_ratios.py --backbone llama-3.2-3b-shape --batch 4 --source-length 760 \
        --target-length 8 --precisions bf16 --dropout 0 --out reports/memory_ratios_llama.md
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from energybench.methods.lst import AUTHORS_T5_BASE_SIDE_LAYERS
from energybench.registry import method_names
from energybench.run.estimate import backbone_config, estimate_one
from energybench.suite import BackboneEntry, MethodEntry
from energybench.train.settings import TrainingSettings

PRECISIONS = ("fp32", "bf16-mixed", "bf16")
SETTINGS: list = []  # (precision, gradient checkpointing), from --precisions
DROPOUT_FIELDS = ("dropout_rate", "attention_dropout", "hidden_dropout_prob", "resid_pdrop")  # T5, Llama, BERT, GPT-2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="t5-base-random")
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--dropout", type=float, default=0.1, help="the config's dropout probability (0.1 as T5's)")
    ap.add_argument("--source-length", type=int, default=128, help="source tokens (causal: prompt tokens)")
    ap.add_argument("--target-length", type=int, default=4, help="label tokens (causal: continuation tokens)")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated, of " + ", ".join(PRECISIONS))
    ap.add_argument("--out")
    args = ap.parse_args()
    SETTINGS[:] = [(p, gc) for p in args.precisions.split(",") for gc in (False, True)]
    config = backbone_config(BackboneEntry(name=args.backbone))
    for field in DROPOUT_FIELDS:
        if hasattr(config, field):
            setattr(config, field, args.dropout)
    entries = {n: MethodEntry(name=n) for n in ["full_ft", *[n for n in method_names() if n != "full_ft"]]}
    if config.model_type == "t5":
        entries["lst (authors' t5-base side layers)"] = MethodEntry(name="lst",
                                                                    side_layers=list(AUTHORS_T5_BASE_SIDE_LAYERS))
    names = list(entries)
    table: dict[tuple[str, bool], dict[str, dict]] = {}
    t0 = time.perf_counter()
    for precision, gc in SETTINGS:
        cfg = TrainingSettings(precision=precision, gradient_checkpointing=gc, batch_size=args.batch)
        for name in names:
            t = time.perf_counter()
            table.setdefault((precision, gc), {})[name] = estimate_one(config, entries[name], cfg, args.batch,
                                                                      args.source_length, args.target_length, 1,
                                                                      "cuda")
            print(f"  {precision} ckpt={gc} {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    lines = [f"# Training-step memory at batch {args.batch} ({args.backbone}, dropout {args.dropout}), from `energybench estimate`",
             "", f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by "
             f"`python benchmarks/memory_ratios.py {' '.join(sys.argv[1:])}` in "
             f"{time.perf_counter() - t0:.0f} s. Modelled: fake tensors, CUDA saved-tensor semantics, source "
             f"{args.source_length} / target {args.target_length} tokens, AdamW. mem_model_bytes in MiB (2^20 bytes) and as a ratio to full_ft in the same "
             "setting; activations = tensors saved for backward. Not a CUDA peak: allocator slack, the CUDA "
             "context and kernel workspaces come on top.", ""]
    head = ["method"] + [f"{p}{' +ckpt' if gc else ''}" for p, gc in SETTINGS]
    lines += ["## mem_model_bytes, MiB (ratio to full_ft)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = []
        for key in SETTINGS:
            r, full = table[key][name], table[key]["full_ft"]
            cells.append(f"{r['mem_model_bytes'] / 2**20:,.0f} ({r['mem_model_bytes'] / full['mem_model_bytes']:.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## By part, MiB (params / grads / optimizer / activations)", "", "| " + " | ".join(head) + " |",
              "|" + "---|" * len(head)]
    for name in names:
        cells = [" / ".join(f"{table[key][name][k] / 2**20:,.0f}" for k in
                            ("mem_params_bytes", "mem_grads_bytes", "mem_optimizer_bytes", "mem_activations_bytes"))
                 for key in SETTINGS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
