"""Issue 17, running: signals stop cleanly, children never import from the cwd, output folders are not clobbered,
labels are escaped, host energy is the run's own, and the smaller messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest
from executor_helpers import grid, ok_row
from rowfactory import figures, make_row, write_rows

from energybench.cli import main
from energybench.results import read_rows
from energybench.run.runner import OutputDirError, run_suite
from energybench.run.stopping import StopRequested, StopSignals

GRID3 = """
    name: grid3
    output_dir: {out}
    backbones: [{{name: tiny-t5}}]
    tasks: [{{name: synth-sst2}}]
    methods: [{{name: bitfit}}, {{name: lora, r: 4}}, {{name: full_ft}}]
    device: cpu
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_grid_between_rows_and_keeps_what_finished(tmp_path, sig, code):
    suite, out = grid(tmp_path, "sig", GRID3)
    seen = []
    before = signal.getsignal(sig)  # another library in this process (e.g. Ray) may have its own handler

    def run(spec, relay):
        seen.append(spec.method.display)
        if len(seen) == 2:  # the second run is "training" once the first row is on disk
            deadline = time.monotonic() + 30
            while not (out / "results.jsonl").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(os.getpid(), sig)
            time.sleep(1)
        return ok_row(spec)

    with StopSignals() as stop, pytest.raises(StopRequested) as exc:
        run_suite(suite, executor=run, echo=lambda m: None, stop=stop)
    assert exc.value.exit_code == code
    rows = read_rows(out / "results.jsonl")
    assert [r["method"] for r in rows] == ["bitfit"] and exc.value.summary.ok == 1  # whole rows only, counted
    assert (out / "results.jsonl").read_bytes().endswith(b"\n")
    assert signal.getsignal(sig) is before  # restored to what it was before the grid


def test_a_signal_inside_an_append_waits_for_the_row_to_be_complete():
    stop = StopSignals()
    with stop:
        with pytest.raises(StopRequested):
            with stop.atomic():
                os.kill(os.getpid(), signal.SIGTERM)
                done = "the block ran to its end"
        assert done


def test_a_second_ctrl_c_exits_at_once():
    script = textwrap.dedent("""
        import os, signal, time
        from energybench.run.stopping import StopSignals
        with StopSignals() as stop:
            with stop.atomic():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)
        print("not reached")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and "not reached" not in proc.stdout and "Traceback" not in proc.stderr


def test_run_prints_the_resumable_stop_message(tmp_path, monkeypatch, capsys, suite_file):
    import energybench.run.runner as runner
    from energybench.run.runner import GridSummary

    def interrupted(*a, **k):
        exc = StopRequested(signal.SIGTERM)
        exc.summary = GridSummary(total=6, skipped=2, ok=1)
        raise exc

    monkeypatch.setattr(runner, "run_suite", interrupted)
    out = tmp_path / "out"
    path = suite_file(f"name: s\noutput_dir: {out}\nbackbones: [{{name: tiny-t5}}]\n"
                      "tasks: [{name: synth-sst2}]\nmethods: [{name: bitfit}]\n")
    assert main(["run", str(path)]) == 143
    err = capsys.readouterr().err
    assert f"stopped: 3 of 6 runs saved in {out}; run the same command to resume" in err and "Traceback" not in err


def test_children_do_not_import_modules_from_the_current_directory(tmp_path):
    """A fresh run process and the fork server (whose preload imports peft) must not run ./peft/__init__.py."""
    from energybench.run.executors.process import CHILD_COMMAND

    marker = tmp_path / "executed"
    (tmp_path / "peft").mkdir()
    (tmp_path / "peft" / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('peft ')\n")
    (tmp_path / "probe.py").write_text(f"open({str(marker)!r}, 'a').write('probe ')\n")
    # the fresh interpreter's command line, with the run module swapped for one that sits in the cwd
    fresh = subprocess.run([*CHILD_COMMAND[:-1], "probe"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert "No module named probe" in fresh.stderr and not marker.exists()
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, "")  # as `python -m energybench.cli` has it
        from energybench.run.executors import forkserver
        proc, stream = forkserver.start("no-such-spec.json", "result.json", {"CUDA_VISIBLE_DEVICES": ""})
        out = stream.read()
        proc.wait()
        print(out[-500:])
    """)
    forked = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "no-such-spec.json" in forked.stdout, forked.stdout + forked.stderr[-2000:]  # the forked run did start
    assert not marker.exists(), marker.read_text()


def test_a_foreign_non_empty_folder_is_not_overwritten(tmp_path):
    suite, out = grid(tmp_path, "mine", GRID3)
    out.mkdir()
    (out / "report.md").write_text("my own notes\n")
    with pytest.raises(OutputDirError, match="not an energybench output directory"):
        run_suite(suite, executor=lambda s, r: ok_row(s), echo=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]
    assert (out / "report.md").read_text() == "my own notes\n"
    run_suite(suite, tmp_path / "fresh", executor=lambda s, r: ok_row(s), echo=lambda m: None)
    run_suite(suite, tmp_path / "fresh", executor=lambda s, r: ok_row(s), echo=lambda m: None)  # a resume is fine


def test_labels_are_escaped_in_markdown_and_formulas_neutralised_in_csv(tmp_path):
    from energybench.report.build import write_report

    rows = [make_row("full_ft"), make_row("<img src=x onerror=alert(1)>"), make_row("=HYPERLINK(\"http://x\")"),
            make_row("@SUM(A1)", score=-3.0)]
    write_rows(tmp_path, rows)
    write_report([tmp_path], tmp_path, formats=("md", "csv"))
    md = (tmp_path / "report.md").read_text()
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    import csv

    cells = [c for row in csv.reader((tmp_path / "report.csv").open()) for c in row]
    assert "'=HYPERLINK(\"http://x\")" in cells and "'@SUM(A1)" in cells
    assert not any(c.startswith(("=", "@", "+")) for c in cells)
    runs = [c for row in csv.reader((tmp_path / "runs.csv").open()) for c in row]
    assert "-3.0" in runs  # a negative number is a number, not a formula


def test_machine_wide_host_energy_shared_by_concurrent_runs_is_never_summed():
    from energybench.report.build import flatten_row

    def row(scope, shared):
        r = make_row("lora", train={"cpu_energy_kwh": 0.5, "ram_energy_kwh": 0.25, "host_energy_scope": scope})
        r.update(host_shared_with_concurrent_runs=shared, executor_detail={"max_runs_on_host_at_once": 2})
        return r

    own = flatten_row(row("process", True))
    assert own["train.host_energy_kwh"] == 0.75
    shared = flatten_row(row("machine", True))
    assert shared["train.cpu_energy_kwh"] is None and shared["train.host_energy_kwh"] is None
    assert "shared: 2 runs were on the host at once" in shared["reason:train.host_energy_kwh"]
    assert flatten_row(row("machine", False))["train.host_energy_kwh"] == 0.75  # alone on the machine: its own


def test_codecarbon_runs_per_process_and_says_so():
    from energybench.measure.host import CodeCarbonTotals
    from energybench.measure.settings import MeasureSettings

    assert MeasureSettings().host_tracking_mode == "process"
    cpu = type("CPU", (), {"_mode": "cpu_load"})()
    assert CodeCarbonTotals(SimpleNamespace(_tracking_mode="process", _hardware=[cpu])).scope() == "process"
    assert CodeCarbonTotals(SimpleNamespace(_tracking_mode="machine", _hardware=[cpu])).scope() == "machine"
    rapl = type("CPU", (), {"_mode": "intel_rapl"})()
    assert CodeCarbonTotals(SimpleNamespace(_tracking_mode="process", _hardware=[rapl])).scope() == "machine"


def test_failed_line_names_its_run(tmp_path, capsys):
    suite, out = grid(tmp_path, "fail", GRID3)

    def run(spec, relay):
        return ok_row(spec) if spec.method.name != "lora" else ok_row(spec).model_copy(
            update={"status": "failed", "error": "boom"})

    run_suite(suite, executor=run, echo=lambda m: None)
    text = capsys.readouterr().out
    assert "  FAILED [2/3] tiny-t5 · synth-sst2 · lora · seed 0: boom" in text


def test_a_third_party_plugin_is_credited_to_its_distribution(monkeypatch):
    from energybench import registry
    from energybench.methods.base import Method

    class Plugin(Method):
        name = "acme"

    ep = SimpleNamespace(name="acme", value="acme:Plugin", load=lambda: Plugin, dist=SimpleNamespace(name="acme-ft"))
    monkeypatch.setattr(registry, "_entry_points", lambda: {"acme": ep})
    assert registry.implementer("acme") == "acme-ft"
    assert registry.implementer.__module__ == "energybench.registry"
