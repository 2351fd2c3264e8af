"""The runner retries failed runs on the next invocation, skips finished ones, and `run` exits 1 on a failure."""

from __future__ import annotations

from conftest import write_suite
from executor_helpers import FAST_TRAINING, ok_row

from energybench import cli
from energybench.results import read_rows
from energybench.run.runner import run_suite
from energybench.suite import load_suite

GRID = """
    name: retry
    output_dir: {out}
    backbones: [{{name: tiny-t5}}]
    tasks: [{{name: synth-sst2}}]
    methods: [{{name: bitfit}}, {{name: lora, r: 4}}]
    seeds: [0, 1]
    device: cpu
"""


def _suite(tmp_path):
    out = tmp_path / "out"
    return load_suite(write_suite(tmp_path, GRID.format(out=out), training=FAST_TRAINING)), out


def test_failed_runs_are_retried_on_the_next_invocation_and_finished_ones_skipped(tmp_path, capsys):
    suite, out = _suite(tmp_path)
    calls: list[list[str]] = []
    failing = {"lora"}

    def fake(spec, relay):
        calls[-1].append(spec.run_id)
        if spec.method.name in failing:
            return ok_row(spec).model_copy(update={"status": "failed", "error": "RuntimeError: boom"})
        return ok_row(spec)

    calls.append([])
    first = run_suite(suite, executor=fake, echo=lambda m: None)
    assert (first.total, first.ok, first.failed, first.skipped) == (4, 2, 2, 0)
    assert first.executor == "local" and first.wall_s > 0
    assert len(first.failures) == 2 and all(f.endswith(": RuntimeError: boom") and "lora" in f
                                            for f in first.failures)
    printed = capsys.readouterr().out  # the progress lines (serial: no run number prefix on relayed lines)
    # issue 17's numbered form: "  FAILED [n/N] title: error", one per failed run
    assert sorted(ln for ln in printed.splitlines() if ln.startswith("  FAILED")) == [
        "  FAILED [3/4] tiny-t5 · synth-sst2 · lora · seed 0: RuntimeError: boom",
        "  FAILED [4/4] tiny-t5 · synth-sst2 · lora · seed 1: RuntimeError: boom"]
    assert [ln.split()[0] for ln in printed.splitlines() if ln.startswith("[")] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    import json

    assert json.loads((out / "suite.json").read_text())["name"] == "retry"
    lora_ids = {r["run_id"] for r in read_rows(out) if r["method_name"] == "lora"}
    assert len(lora_ids) == 2

    failing.clear()
    calls.append([])
    said: list[str] = []
    second = run_suite(suite, executor=fake, echo=said.append)
    assert set(calls[1]) == lora_ids and len(calls[1]) == 2  # only the failed runs, once each
    assert (second.ok, second.failed, second.skipped) == (2, 0, 2)
    assert "2 of 4 runs already finished" in said[0]

    calls.append([])
    third = run_suite(suite, executor=fake, echo=lambda m: None)
    assert calls[2] == [] and (third.ok, third.failed, third.skipped) == (0, 0, 4)
    rows = read_rows(out)
    assert len(rows) == 6 and [r["status"] for r in rows].count("failed") == 2


def test_run_command_exits_1_when_a_run_failed_and_0_once_the_retry_finishes(tmp_path, capsys, monkeypatch):
    """The real CLI and runner; only the child process is replaced (its first attempt fails)."""
    import energybench.run.runner as runner
    from energybench.run.executors import ExecutorSettings, LocalExecutor

    attempts: list[str] = []

    def child(spec, relay, env=None, on_spawn=None):
        attempts.append(spec.run_id)
        if len(attempts) == 1:
            return ok_row(spec).model_copy(update={"status": "failed", "error": "RuntimeError: boom"})
        return ok_row(spec)

    monkeypatch.setattr(runner, "make_executor", lambda settings: LocalExecutor(settings, run_fn=child))
    out = tmp_path / "out"
    path = write_suite(tmp_path, f"""
        name: exitcode
        output_dir: {out}
        backbones: [{{name: tiny-t5}}]
        tasks: [{{name: synth-sst2}}]
        methods: [{{name: bitfit}}]
        device: cpu
    """, training=FAST_TRAINING)
    assert cli.main(["run", str(path)]) == 1
    printed = capsys.readouterr().out
    assert "0 finished, 1 failed, 0 skipped" in printed and "RuntimeError: boom" in printed
    assert cli.main(["run", str(path)]) == 0  # the failed run is tried again, and now finishes
    assert "1 finished, 0 failed, 0 skipped" in capsys.readouterr().out
    assert cli.main(["run", str(path)]) == 0
    assert "0 finished, 0 failed, 1 skipped" in capsys.readouterr().out
    assert len(attempts) == 2 and len(set(attempts)) == 1
    assert [r["status"] for r in read_rows(out)] == ["failed", "ok"]


def test_malformed_task_data_stops_the_run_command_with_exit_2_naming_file_and_line(tmp_path, capsys):
    data = tmp_path / "glue" / "SST-2"
    data.mkdir(parents=True)
    (data / "train.tsv").write_text("sentence\tlabel\nfine\t1\nno label here\n")  # line 3 malformed
    (data / "dev.tsv").write_text("sentence\tlabel\na\t0\nb\t1\n")
    out = tmp_path / "out"
    path = write_suite(tmp_path, f"""
        name: baddata
        output_dir: {out}
        backbones: [{{name: tiny-t5}}]
        tasks: [{{name: sst2, data_dir: {tmp_path / 'glue'}}}]
        methods: [{{name: bitfit}}]
        device: cpu
    """, training=FAST_TRAINING)
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tasks[0] (sst2)" in err and "train.tsv:3: malformed row" in err and "nothing was started" in err
    assert not (out / "results.jsonl").exists()


def test_run_suite_options_are_keyword_only(tmp_path):
    """A positional third argument must not silently become ``echo`` (or the executor)."""
    import pytest

    suite, out = _suite(tmp_path)
    with pytest.raises(TypeError):
        run_suite(suite, out, print)  # type: ignore[misc]


def test_a_suite_with_a_target_annotates_every_final_row_and_wall_time_is_the_grids_own(tmp_path):
    import time

    out = tmp_path / "out"
    body = GRID.format(out=out) + "    target: {synth-sst2: 60.0}\n"
    suite = load_suite(write_suite(tmp_path, body, training=FAST_TRAINING))
    curve = [{"step": 10, "examples": 320, "val_score": 55.0}, {"step": 20, "examples": 640, "val_score": 61.0}]
    t = time.perf_counter()
    summary = run_suite(suite, executor=lambda spec, relay: ok_row(spec, curve=curve), echo=lambda m: None)
    elapsed = time.perf_counter() - t
    assert 0 < summary.wall_s <= elapsed
    rows = read_rows(out)
    assert len(rows) == 4
    assert all(r["target"]["score"] == 60.0 and r["to_target"]["step"] == 20 for r in rows), rows[0]
