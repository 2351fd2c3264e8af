"""What does measuring cost? Training step time with and without the samplers running.

One process, one tiny-t5 model, the same batch every step. Blocks of steps
alternate between "off" (nothing sampling) and "on" (the NVML sampler at
10 Hz and CodeCarbon's offline tracker running, one Meter window per block),
in ABBA order so slow drift (thermal, other load) cancels. Each step is timed
device-synchronized. The overhead is the median over block pairs of
median(on) / median(off) − 1; the goal is ≤ 1 % at 10 Hz.

Without a GPU the NVML sampler runs against a constant fake device, so the
figure is the cost of the sampling thread itself (Python, the GIL, CPU time)
rather than of driver calls. The script also times one sampling sweep
directly, which gives the thread's CPU share at the chosen rate without the
noise of step timings.

    python benchmarks/sampler_overhead.py [--pairs 10] [--steps 50] [--out reports/sampler_overhead.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from energybench.measure.host import HostEnergyTracker
from energybench.measure.nvml import GpuEnergyTracker
from energybench.measure.settings import MeasureSettings
from energybench.measure.trackers import EnergyTracker
from energybench.models.backbones import load_backbone


class ConstantNvml:
    """A stand-in NVML with one board and constant readings (machines without a GPU)."""

    NVML_SUCCESS = 0
    NVML_FI_DEV_POWER_INSTANT = 186
    NVMLError = RuntimeError
    _board = object()

    def nvmlInit(self): ...
    def nvmlShutdown(self): ...
    def nvmlDeviceGetCount(self): return 1
    def nvmlDeviceGetHandleByIndex(self, i): return self._board
    def nvmlDeviceGetUUID(self, h): return "GPU-00000000-0000-0000-0000-000000000000"
    def nvmlDeviceGetName(self, h): return "constant fake GPU"
    def nvmlDeviceGetTotalEnergyConsumption(self, h): return int(time.perf_counter() * 1e5)
    def nvmlDeviceGetPowerManagementDefaultLimit(self, h): return 250_000
    def nvmlDeviceGetPowerUsage(self, h): return 100_000
    def nvmlDeviceGetUtilizationRates(self, h): return SimpleNamespace(gpu=50, memory=10)
    def nvmlDeviceGetMemoryInfo(self, h): return SimpleNamespace(used=2 ** 30, total=2 ** 34, free=2 ** 34 - 2 ** 30)
    def nvmlDeviceGetComputeRunningProcesses(self, h): return [SimpleNamespace(pid=os.getpid())]

    def nvmlDeviceGetFieldValues(self, h, ids):
        return [SimpleNamespace(nvmlReturn=0, valueType=1, value=SimpleNamespace(uiVal=100_000))]


def make_step(device: torch.device, batch_size: int = 16, src_len: int = 48, tgt_len: int = 8):
    backbone = load_backbone("tiny-t5", seed=0)
    model = backbone.model.to(device).train()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(3, vocab, (batch_size, src_len), generator=g).to(device),
             "attention_mask": torch.ones(batch_size, src_len, dtype=torch.long, device=device),
             "labels": torch.randint(3, vocab, (batch_size, tgt_len), generator=g).to(device)}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    return step


def make_energy_tracker(settings: MeasureSettings, device: torch.device) -> tuple[EnergyTracker, str]:
    if device.type == "cuda":
        return EnergyTracker(GpuEnergyTracker(settings, [device]), HostEnergyTracker(settings)), "real NVML"
    fake = GpuEnergyTracker(settings, [0], nvml=ConstantNvml(), env={}, cuda_uuid=lambda i: None)
    return EnergyTracker(fake, HostEnergyTracker(settings)), "constant fake NVML device (no GPU here)"


def sweep_cost_s(settings: MeasureSettings, device: torch.device, n: int = 300) -> float:
    tracker, _ = make_energy_tracker(settings, device)
    gpu = tracker.gpu
    gpu._background = False
    gpu.start()
    gpu.begin("probe")
    t0 = time.perf_counter()
    for _ in range(n):
        gpu.sampler.sample_once()
    dt = (time.perf_counter() - t0) / n
    gpu.end("probe")
    gpu.stop()
    return dt


def codecarbon_cost_s(settings: MeasureSettings, n: int = 20) -> tuple[float, float]:
    """Seconds per call of CodeCarbon's 1 Hz power monitor and of its periodic energy measurement."""
    host = HostEnergyTracker(settings)
    host.start()
    try:
        tracker = host.cc.tracker
        t0 = time.perf_counter()
        for _ in range(n):
            tracker._monitor_power()
        monitor = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for _ in range(n):
            host.cc.now()
        measure = (time.perf_counter() - t0) / n
    finally:
        host.stop()
    return monitor, measure


def _p10(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[int(0.1 * (len(xs) - 1))]


ON_WHAT = {
    "both": "NVML sampler + CodeCarbon",
    "nvml": "NVML sampler only",
    "codecarbon": "CodeCarbon only",
    "none": "nothing (A/A check: the spread of this line is the noise floor)",
}


def run(pairs: int, steps: int, interval_s: float, device: torch.device, on_what: str = "both") -> str:
    settings = MeasureSettings(nvml_interval_s=interval_s, gpu_energy=on_what in ("both", "nvml"),
                               host_energy=on_what in ("both", "codecarbon"))
    load_before = os.getloadavg()[0]
    step = make_step(device)
    for _ in range(15):
        step()
    # CodeCarbon's first start probes the hardware (~1.5 s); do it before timing anything.
    first, nvml_kind = make_energy_tracker(MeasureSettings(nvml_interval_s=interval_s), device)
    first.start()
    first.stop()

    blocks: dict[str, list[list[float]]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}  # process CPU seconds per step, background threads included

    def block(cond: str) -> None:
        c0 = time.process_time()
        blocks[cond].append([step() for _ in range(steps)])
        cpu[cond].append((time.process_time() - c0) / steps)

    samples_on = []
    for k in range(pairs):
        for cond in (("off", "on") if k % 2 == 0 else ("on", "off")):
            if cond == "off":
                block("off")
                continue
            tracker, _ = make_energy_tracker(settings, device)
            tracker.start()
            tracker.begin("block")
            block("on")
            f = tracker.end("block")
            tracker.stop()
            samples_on.append(f.values.get("gpu_sample_interval_mean_s"))

    med = {c: [statistics.median(b) for b in bl] for c, bl in blocks.items()}
    ratios = sorted(on / off for on, off in zip(med["on"], med["off"]))
    overhead = 100 * (statistics.median(ratios) - 1)
    lo, hi = 100 * (ratios[0] - 1), 100 * (ratios[-1] - 1)
    pooled = {c: statistics.median([t for b in bl for t in b]) for c, bl in blocks.items()}
    fast = sorted(_p10(on) / _p10(off) for on, off in zip(blocks["on"], blocks["off"]))
    cpu_ratios = sorted(on / off for on, off in zip(cpu["on"], cpu["off"]))
    full = MeasureSettings(nvml_interval_s=interval_s)
    sweep = sweep_cost_s(full, device)
    monitor, measure = codecarbon_cost_s(full)
    cpu_share = 100 * sweep / interval_s
    total_share = 100 * (sweep / interval_s + monitor / 1.0 + measure / full.host_measure_power_s)
    mean_interval = statistics.fmean([s for s in samples_on if s is not None]) if any(samples_on) else float("nan")
    lines = [
        f"sampler overhead: tiny-t5 training step; 'on' blocks run {ON_WHAT[on_what]}, 'off' blocks nothing",
        f"machine: {platform.node()} · {os.cpu_count()} CPUs · torch {torch.__version__} · device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f" · 1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other processes add noise)",
        f"NVML: {nvml_kind}; interval {interval_s * 1000:.0f} ms (achieved mean incl. window-boundary samples "
        f"{mean_interval * 1000:.1f} ms); CodeCarbon offline tracker",
        f"design: {pairs} ABBA block pairs × {steps} steps, batch 16 × 48 tokens, each step device-synchronized, "
        f"torch threads {torch.get_num_threads()}",
        f"median step time: off {1000 * pooled['off']:.3f} ms · on {1000 * pooled['on']:.3f} ms "
        f"(ratio {pooled['on'] / pooled['off']:.4f})",
        f"per-pair ratio median(on)/median(off): median {statistics.median(ratios):.4f}, "
        f"range {ratios[0]:.4f} – {ratios[-1]:.4f}",
        f"overhead: {overhead:+.2f} % (pairs range {lo:+.2f} % … {hi:+.2f} %); goal ≤ 1 %",
        f"same with each block's 10th-percentile step (less sensitive to other load): median ratio "
        f"{statistics.median(fast):.4f}, range {fast[0]:.4f} – {fast[-1]:.4f}",
        f"process CPU time per step (all threads; insensitive to being descheduled): off "
        f"{1000 * statistics.median(cpu['off']):.3f} ms · on {1000 * statistics.median(cpu['on']):.3f} ms; per-pair "
        f"ratio median {statistics.median(cpu_ratios):.4f}, range {cpu_ratios[0]:.4f} – {cpu_ratios[-1]:.4f}",
        f"direct cost of the background work: one NVML sweep {sweep * 1e6:.1f} µs ({cpu_share:.3f} % of one core at "
        f"{1 / interval_s:.0f} Hz); CodeCarbon power monitor {monitor * 1e3:.2f} ms at 1 Hz, energy measurement "
        f"{measure * 1e3:.2f} ms every {full.host_measure_power_s:g} s; together {total_share:.3f} % of one core",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10, help="ABBA block pairs")
    ap.add_argument("--steps", type=int, default=50, help="steps per block")
    ap.add_argument("--interval", type=float, default=0.1, help="NVML sampling interval, s")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--on", default="both", choices=sorted(ON_WHAT), help="what runs in the 'on' blocks")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 on CPU, where intra-op threads fight the sampler and other "
                         "load for few cores and drown the signal in noise; torch's default on CUDA)")
    ap.add_argument("--out", default="reports/sampler_overhead.txt", help="also write the figures here ('' = no file)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    text = run(args.pairs, args.steps, args.interval, device, args.on)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
