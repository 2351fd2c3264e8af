"""benchmarks/gpu_check.py: its dry run proves the plumbing on CPU (every GPU figure null with a reason),
and a part cut at its time limit leaves the report of the parts that finished."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("doctor", "energy", "overhead", "methods", "quickstart")


def _check(tmp_path: Path, *args: str, timeout: float = 600) -> tuple[int, dict, str]:
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out),
                           "--work-dir", str(tmp_path / "work"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    reports = sorted(out.glob("*-dry-run-cpu.json"))
    assert len(reports) == 1, proc.stdout + proc.stderr
    assert reports[0].with_suffix(".md").exists()
    return proc.returncode, json.loads(reports[0].read_text()), reports[0].with_suffix(".md").read_text()


def _nulls_have_reasons(figures: dict, reasons: dict, where: str) -> None:
    for name, value in figures.items():
        if value is None:
            assert reasons.get(name), f"{where}.{name} is null without a reason"


def test_a_part_cut_at_its_limit_leaves_the_parts_that_finished(tmp_path):
    """(It failed after the executor and fork-server tests in one session: a race in forkserver.start left
    PYTHONSAFEPATH=1 in the environment, so the part could not import its sibling module.)"""
    rc, report, md = _check(tmp_path, "--parts", "doctor,methods", "--limit", "methods=1")
    assert rc == 1  # not every chosen part finished
    secs = report["sections"]
    assert set(secs) == set(SECTIONS)
    assert secs["doctor"]["status"] == "ok" and "energybench doctor" in secs["doctor"]["output"]
    assert secs["doctor"]["figures"]["exit_code"] == 0
    assert secs["methods"]["status"] == "cut short" and "1 s limit" in secs["methods"]["reason"], \
        json.dumps(secs["methods"])[:4000]
    for name in ("energy", "overhead", "quickstart"):
        assert secs[name]["status"] == "not selected" and "--parts" in secs[name]["reason"]
    assert report["machine"]["gpu_name"] is None and report["machine"]["reasons"]["gpu_name"]
    assert report["command"].endswith("--limit methods=1") and report["dry_run"] is True
    assert "## doctor" in md and "cut short" in md


def test_the_methods_part_models_each_row_at_its_own_precision_as_estimate_does(tmp_path, capsys):
    """The check's ratio divides a peak by what a run of that setting records: bf16-mixed rows keep fp32
    master weights, gradients and optimizer state but save bf16 activations, and equal `energybench estimate`
    of the same step (tiny-t5, batch 4, sources cut at 32 bytes, labels 'negative'/'positive' + EOS)."""
    rc, report, _ = _check(tmp_path, "--parts", "methods")
    assert rc == 0, report["sections"]["methods"]
    rows = {(r["method"], r["precision"]): r for r in report["sections"]["methods"]["rows"]}
    parts = ("mem_params_bytes", "mem_grads_bytes", "mem_optimizer_bytes", "mem_activations_bytes")
    for r in rows.values():
        assert r["status"] == "ok", r
        assert r["mem_model_bytes"] == sum(r[k] for k in parts) and r["how"]["mem_model_bytes"] == "modelled"
    for name in ("full_ft", "lora"):
        fp32, mixed = rows[(name, "fp32")], rows[(name, "bf16-mixed")]
        assert [fp32[k] for k in parts[:3]] == [mixed[k] for k in parts[:3]]
        assert fp32["mem_activations_bytes"] != mixed["mem_activations_bytes"]
    suite = tmp_path / "same.yaml"
    suite.write_text("name: same\noutput_dir: runs\nbackbones: [{name: tiny-t5}]\ntasks: [{name: synth-sst2}]\n"
                     "methods: [{name: full_ft}, {name: lora}]\ntraining: {batch_size: 4, max_source_length: 32, "
                     "max_target_length: 16, precision: bf16-mixed}\n")
    from energybench.cli import main

    capsys.readouterr()
    label_tokens = len("negative".encode()) + 1  # ByT5: a token per byte, then EOS; 'positive' is as long
    assert main(["estimate", str(suite), "--format", "json", "--target-length", str(label_tokens), "--jobs", "1"]) == 0
    for est in json.loads(capsys.readouterr().out):
        assert est["mem_model_bytes"] == rows[(est["method"], "bf16-mixed")]["mem_model_bytes"], est["method"]


def test_a_bad_limit_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--limit",
                           "nope=3", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "unknown part 'nope'" in proc.stderr


@pytest.mark.slow
def test_the_dry_run_completes_with_every_gpu_figure_null_and_its_reason(tmp_path):
    rc, report, md = _check(tmp_path)
    secs = report["sections"]
    assert rc == 0, {n: (s["status"], s.get("error"), s.get("log_tail")) for n, s in secs.items()}
    assert [secs[n]["status"] for n in SECTIONS] == ["ok"] * 5
    for name, sec in secs.items():
        _nulls_have_reasons(sec["figures"], sec["reasons"], name)
    energy = secs["energy"]["figures"]
    assert energy["steps"] >= 2
    for name in ("gpu_energy_kwh", "gpu_energy_power_kwh", "gpu_energy_read_kwh", "integral_over_counter",
                 "read_over_counter", "gpu_sample_count"):
        assert energy[name] is None, name
    assert secs["overhead"]["figures"]["overhead_pct"] is None
    assert len(secs["overhead"]["blocks"]) == 4
    rows = secs["methods"]["rows"]
    from energybench.registry import method_names

    assert {r["method"] for r in rows} == set(method_names())
    assert {(r["method"], r["precision"]) for r in rows} >= {("full_ft", "bf16-mixed"), ("lora", "bf16-mixed")}
    for r in rows:
        assert r["status"] == "ok", r
        assert r["mem_model_bytes"] > 0 and r["steps"] == 2
        for k in ("cuda_peak_allocated_bytes", "cuda_peak_reserved_bytes", "allocated_over_modelled",
                  "energy_per_step_kwh"):
            assert r[k] is None and r["reasons"][k], (r["method"], k)
    q = secs["quickstart"]["figures"]
    assert q["single_runs_ok"] == 1 and q["single_runs_failed"] == 0
    assert q["single_runs_with_gpu_energy"] is None and q["two_gpus_wall_s"] is None
    assert "no figure here was measured on a GPU" in md
