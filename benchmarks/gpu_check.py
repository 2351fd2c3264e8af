"""GPU truth in one prepared command: what energybench reports about GPUs, measured on one.

    python benchmarks/gpu_check.py --out reports/gpu/            # on a machine with an NVIDIA GPU
    python benchmarks/gpu_check.py --dry-run --out runs/gpu-dry   # the same plumbing on CPU, tiny shapes

Parts, in order (each in its own child process, killed at its time limit; the
report is rewritten as each part ends, so a cut-short check keeps what
finished, and a part that was cut keeps the figures it had already saved):

{parts}

Writes OUT/<date>-<gpu name>.md and .json with the exact command, GPU name,
driver, torch and CUDA versions and the date. Every figure that could not be
measured is null, with its reason beside it. The dry run writes no GPU
figure: on CPU the trackers return null with their reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gpu_check_report import render_markdown  # noqa: E402

#: part -> (expected seconds on one H100/H200, default limit in seconds, what it measures)
PARTS = {
    "doctor": (15, 60, "`energybench doctor`: driver, NVML fields (energy counter, instant power, power limit, MIG)"),
    "energy": (80, 150, "t5-base-random full fine-tuning for 60 s at batch 96: energy counter Δ vs power integral "
                        "vs READ's util×p0 estimate, their ratios, sample count and mean interval"),
    "overhead": (50, 120, "median step time, NVML sampler at 10 Hz (B) vs off (A), blocks A A B A B A B A: "
                          "A/A is the noise floor"),
    "methods": (210, 330, "every registered method on t5-base-random, batch 96, source length 128, fp32 and "
                          "bf16-mixed, 20 steps each: CUDA peak allocated/reserved, modelled mem_model_bytes "
                          "(by part, at that precision), their ratio, median step time, energy per step, samples/s"),
    "quickstart": (110, 180, "the quickstart (seed 0, first task) with device: cuda; again with --gpus 0,1 "
                             "(two runs at once) when more than one GPU is visible"),
}
REAL = dict(device="cuda", backbone="t5-base-random", batch=96, src_len=128, tgt_len=16, energy_s=60.0,
            energy_min_steps=1, warmup=5, pairs=3, block_steps=20, method_steps=20,
            precisions=["fp32", "bf16-mixed"], bf16_methods=None)
DRY = dict(device="cpu", backbone="tiny-t5", batch=4, src_len=32, tgt_len=16, energy_s=0.0,
           energy_min_steps=2, warmup=1, pairs=1, block_steps=2, method_steps=2,
           precisions=["fp32", "bf16-mixed"], bf16_methods=["full_ft", "lora"])
DRY_LIMIT_S = 150  # generous: on 2 shared cores imports alone can take 30 s a part


def _parts_help() -> str:
    total = sum(p[0] for p in PARTS.values())
    lines = [f"  {name:<10} ~{exp:>3} s (limit {lim} s)  {what}" for name, (exp, lim, what) in PARTS.items()]
    return "\n".join(lines + [f"  {'total':<10} ~{total} s ({total / 60:.1f} min) on one H100/H200"])


def _limits(specs: list[str], dry_run: bool) -> dict[str, float]:
    limits = {n: float(DRY_LIMIT_S if dry_run else p[1]) for n, p in PARTS.items()}
    for spec in specs or []:
        name, _, value = spec.rpartition("=")
        try:
            seconds = float(value)
        except ValueError:
            raise SystemExit(f"gpu_check: error: --limit {spec!r}: expected PART=SECONDS or SECONDS") from None
        if name and name not in PARTS:
            raise SystemExit(f"gpu_check: error: --limit {spec!r}: unknown part {name!r} (parts: {', '.join(PARTS)})")
        for n in ([name] if name else PARTS):
            limits[n] = seconds
    return limits


def machine(dry_run: bool) -> dict:
    """GPU name, driver, torch and CUDA versions; null with a reason where there is none."""
    import torch

    info = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "python": platform.python_version(),
            "host": platform.node(), "gpu_name": None, "gpu_count": 0, "driver": None, "reasons": {}}
    if not dry_run and torch.cuda.is_available():
        info["gpu_count"] = torch.cuda.device_count()
        info["gpu_name"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
    else:
        info["reasons"]["gpu_name"] = "dry run on CPU" if dry_run else "torch sees no CUDA device"
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            info["driver"] = driver.decode() if isinstance(driver, bytes) else driver
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001
        info["reasons"]["driver"] = f"NVML: {exc or type(exc).__name__}"
    return info


def run_part(name: str, work: Path, opts: dict, limit: float) -> dict:
    """Run one part in a child process group; kill the group at ``limit`` and keep what it saved."""
    section_file, opts_file = work / f"{name}.section.json", work / f"{name}.opts.json"
    opts_file.write_text(json.dumps({**opts, "limit_s": limit, "work_dir": str(work)}))
    section_file.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(HERE / "gpu_check_parts.py"), name, str(section_file),
                             str(opts_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=limit)
        cut = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        cut = True
    except BaseException:  # Ctrl-C: the part runs in its own session, so stop it too
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    sec = json.loads(section_file.read_text()) if section_file.exists() else {"figures": {}, "reasons": {}}
    sec.update(limit_s=limit, wall_s=round(time.perf_counter() - t0, 2))
    if cut:
        sec["status"] = "cut short"
        sec["reason"] = f"stopped at its {limit:g} s limit; the figures above were saved before that"
    elif sec.get("status") in (None, "running"):
        sec["status"] = "failed"
        sec["reason"] = f"the part's process exited with {proc.returncode} before finishing"
    if sec["status"] != "ok":
        sec["log_tail"] = (log or "")[-3000:]
    return sec


def write_report(report: dict, out: Path, stem: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / f"{stem}.json", out / f"{stem}.md"
    for path, text in ((js, json.dumps(report, indent=1, default=str)), (md, render_markdown(report))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return md, js


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.format(parts=_parts_help()),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="reports/gpu", help="report folder (default reports/gpu)")
    ap.add_argument("--dry-run", action="store_true",
                    help=f"CPU, tiny-t5, 2 steps per part (bf16 for full_ft and lora only; quickstart: full_ft), {DRY_LIMIT_S} s per part; under 2 minutes; no GPU figure")
    ap.add_argument("--parts", help=f"comma-separated subset of: {', '.join(PARTS)} (default: all, in that order)")
    ap.add_argument("--limit", action="append", metavar="[PART=]SECONDS",
                    help="time limit of one part (PART=SECONDS) or of every part (SECONDS); repeatable")
    ap.add_argument("--work-dir", help="where the parts' scratch files and quickstart runs go "
                                       "(default runs/gpu-check/<date-time>)")
    args = ap.parse_args(argv)
    chosen = list(PARTS) if not args.parts else [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        ap.error(f"--parts: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    limits = _limits(args.limit, args.dry_run)
    now = datetime.now(timezone.utc)
    work = Path(args.work_dir or f"runs/gpu-check/{now:%Y%m%d-%H%M%S}")
    work.mkdir(parents=True, exist_ok=True)
    info = machine(args.dry_run)
    if not args.dry_run and not info["gpu_name"]:
        print("gpu_check: warning: no CUDA device; every GPU figure will be null (use --dry-run to test the "
              "plumbing)", file=sys.stderr)
    slug = "dry-run-cpu" if args.dry_run else re.sub(r"[^A-Za-z0-9]+", "-", info["gpu_name"] or "no-gpu").strip("-")
    stem = f"{now:%Y-%m-%d}-{slug}"
    opts = {**(DRY if args.dry_run else REAL), "dry_run": args.dry_run}
    report = {"command": shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None
              else shlex.join(["python", "benchmarks/gpu_check.py", *argv]),
              "date": now.isoformat(timespec="seconds"), "dry_run": args.dry_run, "machine": info,
              "settings": opts, "expected_s": {n: p[0] for n, p in PARTS.items()}, "sections": {}}
    for name in PARTS:
        report["sections"][name] = {"status": "pending" if name in chosen else "not selected", "figures": {},
                                    "reasons": {}, "reason": "not run yet" if name in chosen
                                    else f"not in --parts {args.parts}"}
    md, js = write_report(report, Path(args.out), stem)
    for name in chosen:
        print(f"[{name}] running (limit {limits[name]:g} s) …", flush=True)
        report["sections"][name] = sec = run_part(name, work, opts, limits[name])
        print(f"[{name}] {sec['status']} in {sec['wall_s']} s", flush=True)
        md, js = write_report(report, Path(args.out), stem)
    print(f"report: {md}\n        {js}")
    return 0 if all(report["sections"][n]["status"] == "ok" for n in chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
