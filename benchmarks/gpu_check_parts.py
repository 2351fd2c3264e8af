"""The parts of ``benchmarks/gpu_check.py``, each run alone in a child process.

``python benchmarks/gpu_check_parts.py PART SECTION.json OPTIONS.json`` runs one
part and rewrites SECTION.json (atomically) every time it has something new,
so when the parent kills a part at its time limit the figures it had already
measured survive. Every figure is a value, or null with the reason in
``reasons[name]``; ``how[name]`` says whether it is measured, integrated,
estimated or modelled.

The parts use energybench's own machinery (Meter, build_trackers,
GpuEnergyTracker, the training loop ``fit``, the accounting's
``model_memory``), so what they check is what a run measures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

MEASURED, INTEGRATED, ESTIMATED, MODELLED = "measured", "integrated", "estimated", "modelled"


class Section:
    """One part's figures, saved after every change."""

    def __init__(self, path: str | Path, dry_run: bool):
        self.path = Path(path)
        self.dry_run = dry_run
        self.data = {"status": "running", "figures": {}, "how": {}, "reasons": {}, "notes": []}
        self.save()

    def put(self, name: str, value, how: str = MEASURED, reason: str | None = None) -> None:
        self.data["figures"][name] = value
        if value is None:
            why = reason or "not measured"
            self.data["reasons"][name] = f"{why} (dry run on CPU)" if self.dry_run and "dry run" not in why else why
            self.data["how"].pop(name, None)
        else:
            self.data["how"][name] = how
            if reason:
                self.data["reasons"][name] = reason
        self.save()

    def from_window(self, window: dict, names: list[str]) -> None:
        """Copy ``names`` from a Meter window, keeping the trackers' provenance and reasons."""
        for n in names:
            self.put(n, window.get(n), window.get("provenance", {}).get(n, MEASURED), window.get("reasons", {}).get(n))

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def ratio(sec: Section, name: str, num: str, den: str, how: str) -> None:
    a, b = sec.data["figures"].get(num), sec.data["figures"].get(den)
    if a is None or b in (None, 0):
        sec.put(name, None, reason=f"needs {num} and {den}; " + "; ".join(
            f"{k}: {sec.data['reasons'].get(k, 'zero')}" for k, v in ((num, a), (den, b)) if v in (None, 0)))
    else:
        sec.put(name, a / b, how, f"{num} / {den}")


# ------------------------------------------------------------------ shared setup
def fixed_task(n_train: int, src_len: int):
    """synth-sst2 with every source longer than ``src_len`` bytes, so every batch is exactly (b, src_len)."""
    from energybench.tasks.base import Example, TaskData
    from energybench.tasks.synthetic import make_synthetic

    base = make_synthetic("synth-sst2", seed=0)
    pool = base.train + base.validation

    def long(e):
        text = e.text_a
        while len(text.encode()) < 2 * src_len:
            text += " " + e.text_a
        return Example(text, None, e.label)

    train = [long(pool[i % len(pool)]) for i in range(n_train)]
    return TaskData(base.spec, train, train[:4], train[:4], source="synth-sst2, sources lengthened past the cut")


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steady_model(opts):
    """The steady load of the energy and overhead parts: full fine-tuning of the backbone, one fixed batch."""
    import torch

    from energybench.models.backbones import load_backbone
    from energybench.train.batches import to_device, training_batch

    device = torch.device(opts["device"])
    bb = load_backbone(opts["backbone"], seed=0)
    data = fixed_task(opts["batch"], opts["src_len"])
    batch = to_device(training_batch(bb.tokenizer, data.spec, data.train, opts["src_len"], opts["tgt_len"]), device)
    model = bb.model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> float:
        t0 = time.perf_counter()
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        return time.perf_counter() - t0

    return device, step


def settings(**kw):
    from energybench.measure.settings import MeasureSettings

    # Host energy (CodeCarbon) is not what this check is about and costs seconds per start.
    return MeasureSettings(host_energy=False, nvml_interval_s=0.1, **kw)


# ------------------------------------------------------------------ parts
def part_doctor(sec: Section, opts) -> None:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "energybench.cli", "doctor"], capture_output=True, text=True,
                         timeout=opts["limit_s"])
    sec.put("exit_code", out.returncode)
    sec.data["output"] = out.stdout + (f"\n[stderr]\n{out.stderr[-2000:]}" if out.returncode else "")
    sec.put("wall_s", time.perf_counter() - t0)


ENERGY_FIELDS = ["gpu_energy_kwh", "gpu_energy_power_kwh", "gpu_energy_read_kwh", "read_estimate_error_pct",
                 "read_p0_kw", "gpu_power_mean_w", "gpu_power_max_w", "gpu_util_mean_pct", "gpu_sample_count",
                 "gpu_sample_interval_mean_s", "gpu_power_source", "gpu_energy_low_confidence", "nvml_errors"]


def part_energy(sec: Section, opts) -> None:
    from energybench.measure.meter import Meter
    from energybench.measure.trackers import build_trackers

    device, step = steady_model(opts)
    for _ in range(opts["warmup"]):
        step()
    steps = 0
    with Meter(build_trackers(settings(), devices=[device])) as meter:
        meter.begin_window("train")
        t_end = time.perf_counter() + opts["energy_s"]
        while steps < opts["energy_min_steps"] or time.perf_counter() < t_end:
            step()
            steps += 1
        w = meter.end_window("train")
    sec.put("steps", steps)
    sec.put("wall_s", w["wall_s"])
    sec.from_window(w, ENERGY_FIELDS)
    ratio(sec, "integral_over_counter", "gpu_energy_power_kwh", "gpu_energy_kwh", INTEGRATED)
    ratio(sec, "read_over_counter", "gpu_energy_read_kwh", "gpu_energy_kwh", ESTIMATED)
    if w.get("warnings"):
        sec.note("tracker warnings: " + "; ".join(w["warnings"]))


def part_overhead(sec: Section, opts) -> None:
    """Median step time, sampler off (A) and NVML sampler at 10 Hz (B): A A B A B … A; A/A is the noise floor."""
    from energybench.measure.nvml import GpuEnergyTracker

    device, step = steady_model(opts)
    for _ in range(opts["warmup"]):
        step()
    order = ["A"] + ["A", "B"] * opts["pairs"] + ["A"]
    blocks, sampler_ran, why = [], True, None
    for i, kind in enumerate(order):
        tracker = None
        if kind == "B":
            tracker = GpuEnergyTracker(settings(), [device])
            tracker.start()
            if tracker.sampler is None:
                sampler_ran, why = False, tracker.unavailable
            tracker.begin(f"b{i}")
        times = [step() for _ in range(opts["block_steps"])]
        if tracker is not None:
            tracker.end(f"b{i}")
            tracker.stop()
        blocks.append({"kind": kind, "median_step_s": statistics.median(times)})
        sec.data["blocks"] = blocks
        sec.save()
    sec.put("steps_per_block", opts["block_steps"])
    sec.put("sampler_interval_s", 0.1, reason="the NVML sampler's period in the B blocks")
    a1, a2 = blocks[0]["median_step_s"], blocks[1]["median_step_s"]
    sec.put("aa_noise_pct", 100 * (a2 / a1 - 1), MEASURED, "second A block vs first (noise floor)")
    if not sampler_ran:
        sec.put("overhead_pct", None, reason=f"the NVML sampler did not run in the B blocks: {why}")
        return
    diffs = [blocks[i]["median_step_s"] / statistics.fmean([blocks[i - 1]["median_step_s"],
                                                           blocks[i + 1]["median_step_s"]]) - 1
             for i, b in enumerate(blocks) if b["kind"] == "B"]
    sec.put("overhead_pct", 100 * statistics.median(diffs), MEASURED,
            "median over B blocks of B / mean(neighbouring A) - 1")


def _quickstart_suite(opts, path: Path) -> None:
    import yaml

    suite = yaml.safe_load((resources.files("energybench.suites") / "quickstart.yaml").read_text())
    suite["device"] = opts["device"]
    suite.pop("executor", None)  # its `jobs: 2` is for CPU runs and does not combine with --gpus
    suite["seeds"] = [0]
    suite["tasks"] = suite["tasks"][:1]
    if opts["dry_run"]:
        suite["methods"] = [m for m in suite["methods"] if m["name"] == "full_ft"]
        suite["training"].update(max_steps=2, eval_every_steps=2, max_eval_examples=16, eval_batch_size=16)
        suite["measure"] = {**suite.get("measure", {}), "latency_warmup": 1, "latency_repeats": 2,
                            "host_energy": False}
    path.write_text(yaml.safe_dump(suite, sort_keys=False))


def _run_suite(sec: Section, key: str, suite: Path, out: Path, extra: list[str], limit: float) -> None:
    from energybench.results import read_rows

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "energybench.cli", "run", str(suite), "--output-dir", str(out),
                           *extra], capture_output=True, text=True, timeout=limit)
    sec.put(f"{key}_wall_s", time.perf_counter() - t0)
    sec.put(f"{key}_exit_code", proc.returncode)
    sec.data[f"{key}_output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    rows = read_rows(out) if (out / "results.jsonl").exists() else []
    sec.put(f"{key}_runs_ok", sum(r["status"] == "ok" for r in rows))
    sec.put(f"{key}_runs_failed", sum(r["status"] != "ok" for r in rows))
    with_e = sum((r.get("windows", {}).get("train", {}).get("gpu_energy_kwh") is not None) for r in rows)
    if with_e:
        sec.put(f"{key}_runs_with_gpu_energy", with_e)
    else:
        reasons = {r.get("windows", {}).get("train", {}).get("reasons", {}).get("gpu_energy_kwh") for r in rows}
        sec.put(f"{key}_runs_with_gpu_energy", None,
                reason="no row has a GPU energy counter figure: " + "; ".join(sorted(map(str, reasons))))


def part_quickstart(sec: Section, opts) -> None:
    import torch

    out = Path(opts["work_dir"])
    suite = out / "quickstart-check.yaml"
    _quickstart_suite(opts, suite)
    sec.note("the quickstart suite with device: %s, seed 0 and its first task only (time budget)%s"
             % (opts["device"], "; dry run: full_ft only, 2 steps" if opts["dry_run"] else ""))
    start = time.perf_counter()
    _run_suite(sec, "single", suite, out / "quickstart", [], opts["limit_s"])
    n = torch.cuda.device_count() if opts["device"] == "cuda" else 0
    if n > 1:
        left = opts["limit_s"] - (time.perf_counter() - start)
        _run_suite(sec, "two_gpus", suite, out / "quickstart-gpus", ["--gpus", "0,1"], max(left, 1))
    else:
        sec.put("two_gpus_wall_s", None, reason=f"{n} GPU(s) visible: two runs at once with --gpus need 2")


def part_methods(sec: Section, opts) -> None:
    from gpu_check_methods import part_methods as run  # beside this file; it imports the helpers above

    run(sec, opts)


PARTS = {"doctor": part_doctor, "energy": part_energy, "overhead": part_overhead, "methods": part_methods,
         "quickstart": part_quickstart}


def main(argv: list[str]) -> int:
    part, section_path, opts_path = argv
    opts = json.loads(Path(opts_path).read_text())
    sec = Section(section_path, opts["dry_run"])
    try:
        PARTS[part](sec, opts)
        sec.data["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - written into the report, then the next part runs
        import traceback

        sec.data["status"] = "failed"
        sec.data["error"] = f"{type(exc).__name__}: {exc}"
        sec.data["traceback_tail"] = traceback.format_exc()[-2000:]
    sec.save()
    return 0 if sec.data["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
