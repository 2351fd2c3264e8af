"""Search and cost to target with real (tiny) training: each trial its own process, killed and resumed for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

from energybench.results import read_rows
from energybench.run.runner import run_suite
from energybench.suite import load_suite

TRAINING = """
training:
  batch_size: 16
  max_steps: 6
  eval_every_steps: 2
  patience: 3
  max_source_length: 48
  max_eval_examples: 12
  eval_batch_size: 32
measure:
  latency_warmup: 1
  latency_repeats: 3
"""


def _suite(tmp_path: Path, trials: int, seeds: str, target: str = "") -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(f"""name: e2e
output_dir: {tmp_path / 'out'}
backbones: [{{name: tiny-t5}}]
tasks: [{{name: synth-sst2}}]
methods: [{{name: bitfit}}]
seeds: {seeds}
search: {{trials: {trials}, low: 1.0e-4, high: 3.0e-2}}
{target}
{TRAINING}""", encoding="utf-8")
    return path


@pytest.mark.slow
def test_real_search_then_final_seeds_and_to_target_matches_the_validation_history(tmp_path):
    suite = load_suite(_suite(tmp_path, 4, "[0, 1]", "target: {synth-sst2: 50.0}"))
    summary = run_suite(suite, echo=lambda m: None)
    assert (summary.trials, summary.ok, summary.failed) == (4, 2, 0)
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert [r["role"] for r in rows] == ["trial"] * 4 + ["final"] * 2
    ok_trials = [r for r in rows[:4] if r["status"] == "ok"]
    best = max(ok_trials, key=lambda r: (r["val_score"], -r["trial"]["number"]))
    chosen = best["trial"]["params"]["learning_rate"]
    for final in rows[4:]:
        assert final["config"]["training"]["learning_rate"] == chosen
        history = final["method_info"]["history"]
        curve = final["curve"]
        assert [p["step"] for p in curve] == [h["step"] for h in history]
        assert [p["val_score"] for p in curve] == [h["val_score"] for h in history]
        assert [p["examples"] for p in curve] == [16 * p["step"] for p in curve]
        walls = [p["wall_s"] for p in curve]
        assert walls == sorted(walls) and walls[-1] <= final["windows"]["train"]["wall_s"]
        first = next((h for h in history if h["val_score"] >= 50.0), None)
        if first is None:
            top = max(history, key=lambda h: h["val_score"])
            assert final["to_target"] is None
            assert f"at step {top['step']}" in final["to_target_reason"]
        else:
            assert final["to_target"]["step"] == first["step"]
            assert final["to_target"]["val_score"] == first["val_score"]


@pytest.mark.slow
def test_real_search_killed_mid_trial_resumes_without_repeating_finished_trials(tmp_path):
    path = _suite(tmp_path, 3, "[0]")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}
    proc = subprocess.Popen([sys.executable, "-m", "energybench.cli", "run", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (results.exists() and results.read_bytes().count(b"\n") >= 1):
        time.sleep(0.2)
    time.sleep(1.0)  # into the next trial's run
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_rows(results)
    assert 1 <= len(before) < 3 and all(r["role"] == "trial" for r in before)
    resumed = run_cli("run", str(path))
    assert resumed.returncode == 0, resumed.stderr
    after = read_rows(results)
    assert after[: len(before)] == before
    trials = [r for r in after if r["role"] == "trial"]
    assert len(trials) == 3 and len({r["run_id"] for r in trials}) == 3
    assert [r["role"] for r in after[3:]] == ["final"]
