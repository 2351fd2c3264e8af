"""What the accounting itself costs: fake tensors vs a real CPU step, wall time and extra peak RSS.

Every run accounts one training step before it trains (DESIGN.md,
"mem_model_bytes"). This prints, for T5 shapes (random weights, nothing
downloaded) at a few batch sizes, the wall time and the peak resident memory
the accounting adds on top of the model, for ``accounting_mode: fake``
(the default) and ``real`` (kept for cross-checks), and checks that both count
the same bytes where their semantics agree (CPU semantics; CUDA semantics are
printed beside). Each measurement runs in a fresh process, so peaks do not
mix (a fake accounting is the median of three such processes, the real one
runs once); the peak is the kernel's high-water mark reset just before accounting
(/proc/self/clear_refs), minus the resident set at that moment.

The real step runs only where its modelled size (from the fake count) stays
under --max-real-gib, because on a shared machine a 19 GB step is not a
benchmark but an outage.

    python benchmarks/accounting_cost.py [--out reports/accounting_cost.txt] [--max-real-gib 6]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

CASES = [("t5-small-random", 8), ("t5-small-random", 96), ("t5-base-random", 8), ("t5-base-random", 96)]
SRC, TGT = 128, 4


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(preset: str, batch: int, mode: str, semantics: str) -> dict:
    """One accounting in this process: build the model, reset the RSS peak, account, report."""
    import gc

    import torch

    from energybench.measure.accounting import account_training_step
    from energybench.methods.base import ApplyContext
    from energybench.models.backbones import load_backbone
    from energybench.registry import load_method

    torch.set_num_threads(1)
    model = load_method("full_ft")().apply(load_backbone(preset, seed=0).model, ApplyContext(total_steps=10, seed=0))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 380, (batch, SRC), generator=g)
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(3, 380, (batch, TGT), generator=g)}
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    t0 = time.perf_counter()
    cost = account_training_step(model, lambda m, b: m(**b).loss, data, lambda p: torch.optim.AdamW(p),
                                 mode=mode, semantics=semantics)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "extra_rss_mib": (_status_kib("VmHWM") - base) / 1024,
            "mem_model_bytes": cost.memory.total_bytes, "activations": cost.memory.activations_bytes,
            "train_flops": cost.train_flops}


def measure(preset: str, batch: int, mode: str, semantics: str, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", preset, str(batch), mode, semantics]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median_of(results: list[dict]) -> dict:
    """The result with the median wall time (the first error, if any measurement failed)."""
    failed = [r for r in results if "error" in r]
    if failed:
        return failed[0]
    return sorted(results, key=lambda r: r["wall_s"])[len(results) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the table here")
    ap.add_argument("--max-real-gib", type=float, default=6.0, help="skip the real step above this modelled size")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per fake accounting (median wall)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        preset, batch, mode, semantics = args.child
        print(json.dumps(child(preset, int(batch), mode, semantics)))
        return 0
    lines = [f"# accounting cost: fake tensors vs a real CPU step (full_ft, source {SRC}, target {TGT} tokens)",
             f"# {datetime.now(timezone.utc).isoformat(timespec='seconds')} · {platform.node()} · "
             f"{os.cpu_count()} cores (shared) · one torch thread · python {platform.python_version()}",
             "", f"{'shape':<16} {'batch':>5}  {'mode':<10} {'wall s':>8} {'extra RSS MiB':>14} "
             f"{'mem_model MiB':>14} {'train GFLOPs':>13}  note"]
    for preset, batch in CASES:
        results = {}
        for mode, sem in (("fake", "cuda"), ("fake", "cpu"), ("real", "cpu")):
            if mode == "real":
                modelled = results[("fake", "cpu")].get("mem_model_bytes")
                if modelled is None or modelled > args.max_real_gib * 2**30:
                    results[(mode, sem)] = {"error": f"not run: modelled step over {args.max_real_gib:g} GiB"}
                    continue
            print(f"  {preset} batch {batch}: {mode}/{sem} …", file=sys.stderr, flush=True)
            results[(mode, sem)] = _median_of(
                [measure(preset, batch, mode, sem, args.timeout) for _ in range(1 if mode == "real" else args.repeats)])
        fake = results[("fake", "cpu")]
        for (mode, sem), r in results.items():
            if "error" in r:
                lines.append(f"{preset:<16} {batch:>5}  {mode + '/' + sem:<10} {'—':>8} {'—':>14} {'—':>14} {'—':>13}  {r['error']}")
                continue
            note = ""
            if mode == "real":
                same = (r["mem_model_bytes"], r["train_flops"]) == (fake["mem_model_bytes"], fake["train_flops"])
                note = ("= fake/cpu byte for byte and FLOP for FLOP" if same else "DIFFERS from fake/cpu") + "; " + \
                    ", ".join(f"{m}/{s} {r['wall_s'] / results[(m, s)]['wall_s']:.0f}x faster"
                              for m, s in (("fake", "cuda"), ("fake", "cpu")) if "wall_s" in results[(m, s)])
            lines.append(f"{preset:<16} {batch:>5}  {mode + '/' + sem:<10} {r['wall_s']:>8.2f} {r['extra_rss_mib']:>14.0f} "
                         f"{r['mem_model_bytes'] / 2**20:>14.1f} {r['train_flops'] / 1e9:>13.1f}  {note}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
