"""The runner: failed runs are recorded and the grid goes on; kills lose nothing finished; one writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

from energybench.results import append_result, read_rows
from energybench.run.runner import OutputDirLockedError, output_lock, run_suite
from energybench.suite import load_suite


def _rows(out: Path) -> list[dict]:
    return read_rows(out / "results.jsonl")


def test_failed_run_is_recorded_with_its_error_and_the_grid_continues(tmp_path, suite_file):
    bad = tmp_path / "glue" / "SST-2"
    bad.mkdir(parents=True)
    (bad / "train.tsv").write_text("sentence\tlabel\nfine\t1\nno label here\n")
    (bad / "dev.tsv").write_text("sentence\tlabel\na\t0\nb\t1\n")
    path = suite_file(f"""
        name: failing
        output_dir: {tmp_path / 'out'}
        backbones: [{{name: tiny-t5}}]
        tasks: [{{name: sst2, data_dir: {tmp_path / 'glue'}}}, {{name: synth-sst2}}]
        methods: [{{name: full_ft}}]
    """)
    summary = run_suite(load_suite(path), echo=lambda m: None)
    assert (summary.ok, summary.failed) == (1, 1)
    rows = {r["task"]: r for r in _rows(tmp_path / "out")}
    assert rows["sst2"]["status"] == "failed"
    assert "train.tsv:3: malformed row" in rows["sst2"]["error"]
    assert "Traceback" in rows["sst2"]["traceback_tail"] or "TaskDataError" in rows["sst2"]["traceback_tail"]
    assert rows["synth-sst2"]["status"] == "ok" and rows["synth-sst2"]["score"] is not None


@pytest.mark.slow  # two CLI runs of a real grid: ~70 s on 2 busy cores; fast twin in test_runner_retry.py
def test_rerun_skips_finished_runs_and_says_so(tmp_path, suite_file):
    path = suite_file(f"""
        name: resume
        output_dir: {tmp_path / 'out'}
        backbones: [{{name: tiny-t5}}]
        tasks: [{{name: synth-sst2}}]
        methods: [{{name: bitfit}}]
    """)
    first = run_cli("run", str(path))
    assert first.returncode == 0, first.stderr
    t0 = time.perf_counter()
    second = run_cli("run", str(path))
    assert second.returncode == 0, second.stderr
    assert "1 of 1 runs already finished" in second.stdout
    assert "0 finished, 0 failed, 1 skipped" in second.stdout
    assert len(_rows(tmp_path / "out")) == 1
    # nothing trained (the lines above); the bound only catches a rerun that retrains (~minutes on 2 busy cores),
    # generous enough for a loaded machine's interpreter and torch start-up
    assert time.perf_counter() - t0 < 120


@pytest.mark.slow  # three real runs, killed and resumed: ~2 min
def test_sigkilled_run_resumes_without_redoing_or_losing_finished_runs(tmp_path, suite_file):
    out = tmp_path / "out"
    path = suite_file(f"""
        name: killed
        output_dir: {out}
        backbones: [{{name: tiny-t5}}]
        tasks: [{{name: synth-sst2}}]
        methods: [{{name: full_ft}}, {{name: bitfit}}, {{name: lora}}]
    """)
    env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}
    proc = subprocess.Popen([sys.executable, "-m", "energybench.cli", "run", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (results.exists() and results.read_bytes().count(b"\n") >= 1):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and the running child, mid-grid
    proc.wait()
    before = _rows(out)
    assert 1 <= len(before) < 3, "the kill should land mid-grid"
    resumed = run_cli("run", str(path))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(before)} of 3 runs already finished" in resumed.stdout
    after = _rows(out)
    assert after[: len(before)] == before, "finished rows were rewritten"
    ids = [r["run_id"] for r in after]
    assert len(ids) == len(set(ids)) == 3 and all(r["status"] == "ok" for r in after)


def test_torn_last_line_is_skipped_by_readers_and_cut_by_the_next_append(tmp_path):
    path = tmp_path / "results.jsonl"
    append_result(path, {"run_id": "a", "status": "ok"})
    with open(path, "ab") as fh:
        fh.write(b'{"run_id": "b", "sta')  # a writer killed mid-line
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert [r["run_id"] for r in read_rows(path)] == ["a"]
    append_result(path, {"run_id": "c", "status": "ok"})
    assert [json.loads(l)["run_id"] for l in path.read_text().splitlines()] == ["a", "c"]


def test_second_run_on_the_same_output_dir_is_refused(tmp_path):
    with output_lock(tmp_path):
        with pytest.raises(OutputDirLockedError, match="in use by another `energybench run`"):
            with output_lock(tmp_path):
                pass
    with output_lock(tmp_path):  # released afterwards
        pass


def test_glue_suite_offline_fails_fast_naming_what_is_missing():
    t0 = time.perf_counter()
    res = run_cli("run", "glue_t5")
    assert res.returncode == 2
    assert time.perf_counter() - t0 < 120  # no network retries: hub timeouts would take minutes
    assert "'t5-base'" in res.stderr and "backbone.path" in res.stderr
    assert "nyu-mll/glue" in res.stderr and "data_dir" in res.stderr
    assert "nothing was started" in res.stderr
