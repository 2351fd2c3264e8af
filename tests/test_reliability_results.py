"""Issue 17, result files: a short write loses nothing, bad result files and unwritable folders are named errors."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pytest
from executor_helpers import grid, ok_row
from rowfactory import make_row, write_rows

from energybench import results
from energybench.cli import main
from energybench.results import ResultsFileError, ResultsWriteError, append_result, read_rows, write_file_atomic
from energybench.run.runner import OutputDirError, run_suite

GRID3 = """
    name: grid3
    output_dir: {out}
    backbones: [{{name: tiny-t5}}]
    tasks: [{{name: synth-sst2}}]
    methods: [{{name: bitfit}}, {{name: lora, r: 4}}, {{name: full_ft}}]
    device: cpu
"""


def short_writer(fail_after_bytes: int):
    """os.write on a disk with ``fail_after_bytes`` free: writes short once, then raises ENOSPC (as Linux does)."""
    state = {"left": fail_after_bytes}

    def write(fd, data):
        if state["left"] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(data), state["left"])
        state["left"] -= n
        return os.write(fd, bytes(data[:n]))

    return write


def test_a_short_write_is_completed_not_ignored(tmp_path, monkeypatch):
    calls = []

    def halves(fd, data):  # a writer that only ever writes half of what it is given (a legal os.write)
        n = max(1, len(data) // 2)
        calls.append(n)
        return os.write(fd, bytes(data[:n]))

    monkeypatch.setattr(results, "_write", halves)
    row = make_row()
    append_result(tmp_path / "results.jsonl", row)
    assert len(calls) > 1
    assert read_rows(tmp_path / "results.jsonl") == [json.loads(json.dumps(row))]


def test_full_disk_stops_the_grid_with_a_named_error_and_keeps_every_earlier_row(tmp_path, monkeypatch):
    suite, out = grid(tmp_path, "full", GRID3)
    calls = []

    def third_row_hits_a_full_disk(fd, data):  # rows 1 and 2 fit, row 3 gets half written, then ENOSPC
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("results.jsonl"):
            return os.write(fd, data)  # suite.json
        calls.append(len(data))
        if len(calls) == 3:
            return os.write(fd, bytes(data[: len(data) // 2]))
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    monkeypatch.setattr(results, "_write", third_row_hits_a_full_disk)
    run = lambda spec, relay: ok_row(spec)  # noqa: E731
    with pytest.raises(ResultsWriteError) as exc:
        run_suite(suite, executor=run, echo=lambda m: None)
    msg = str(exc.value)
    assert str(out / "results.jsonl") in msg and "No space left on device" in msg and "MiB free" in msg
    data = (out / "results.jsonl").read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 2  # the torn third row was cut away
    assert [r["method"] for r in read_rows(out / "results.jsonl")] == ["bitfit", "lora"]


def test_run_exits_2_naming_the_file_when_the_disk_fills(tmp_path, monkeypatch, capsys, suite_file):
    import energybench.run.runner as runner

    def full(*a, **k):
        raise ResultsWriteError(f"{tmp_path}/out/results.jsonl: could not append a result row (No space left on "
                                "device; 0.0 MiB free)")

    monkeypatch.setattr(runner, "run_suite", full)
    path = suite_file(f"name: s\noutput_dir: {tmp_path / 'out'}\nbackbones: [{{name: tiny-t5}}]\n"
                      "tasks: [{name: synth-sst2}]\nmethods: [{name: bitfit}]\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "results.jsonl: could not append" in err and "MiB free" in err and "run the same command" in err


def test_atomic_write_leaves_the_old_file_when_the_disk_fills(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    target.write_text("old report\n")
    monkeypatch.setattr(results, "_write", short_writer(10))
    with pytest.raises(ResultsWriteError, match="report.md: cannot write"):
        write_file_atomic(target, "x" * 1000)
    assert target.read_text() == "old report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]  # no temporary file left


def test_results_file_that_is_a_directory_is_a_named_error(tmp_path, capsys):
    suite, out = grid(tmp_path, "dir", GRID3)
    (out / "results.jsonl").mkdir(parents=True)
    with pytest.raises(ResultsFileError, match="results.jsonl: is a directory") as exc:
        run_suite(suite, executor=lambda s, r: ok_row(s), echo=lambda m: None)
    assert "results.jsonl/results.jsonl" not in str(exc.value)
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "results.jsonl/results.jsonl" not in err


@pytest.mark.parametrize("bad, expect", [(b"garbage\n", "not a JSON result row"), (b"[1, 2]\n", "got list"),
                                         (b"42\n", "got int")])
def test_resume_names_a_damaged_line_in_the_middle(tmp_path, bad, expect):
    suite, out = grid(tmp_path, "bad", GRID3)
    run_suite(suite, executor=lambda s, r: ok_row(s), echo=lambda m: None)
    lines = (out / "results.jsonl").read_bytes().splitlines(keepends=True)
    (out / "results.jsonl").write_bytes(lines[0] + bad + b"".join(lines[1:]))
    with pytest.raises(ResultsFileError) as exc:
        run_suite(suite, executor=lambda s, r: ok_row(s), echo=lambda m: None)
    assert f"{out / 'results.jsonl'}:2: " in str(exc.value) and expect in str(exc.value)


def test_lock_file_that_is_a_directory_is_a_named_error(tmp_path):
    suite, out = grid(tmp_path, "lock", GRID3)
    (out / ".energybench.lock").mkdir(parents=True)
    with pytest.raises(OutputDirError, match="is a directory, not energybench's lock file"):
        run_suite(suite, executor=lambda s, r: ok_row(s), echo=lambda m: None)


def test_unwritable_output_folders_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # mkdir under a file fails like a read-only folder (works as root, too)
    suite, out = grid(tmp_path, "ro", GRID3)
    with pytest.raises(OutputDirError, match="not a directory|cannot use"):
        run_suite(suite, blocker / "out", executor=lambda s, r: ok_row(s), echo=lambda m: None)
    run_suite(suite, executor=lambda s, r: ok_row(s), echo=lambda m: None)
    assert main(["report", str(out), "-o", str(blocker / "rep"), "--format", "md"]) == 2
    assert "cannot create the report folder" in capsys.readouterr().err
    assert main(["baseline", "export", str(out), "-o", str(blocker / "b.json")]) == 2
    assert "a-file" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_report_folder_exits_2(tmp_path, capsys):
    write_rows(tmp_path / "r", [make_row("full_ft")])
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["report", str(tmp_path / "r"), "-o", str(ro), "--format", "md"]) == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def _raw_rows(d: Path, rows: list[dict]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.mark.parametrize("mutate, expect", [
    (lambda r: r["windows"]["train"].update(wall_s=math.inf), "windows.train.wall_s is not a finite number"),
    (lambda r: r.update(score=-math.inf), "score is not a finite number"),
    (lambda r: r.pop("method"), "lacks method"),
    (lambda r: r.pop("run_id"), "no \"run_id\""),
    (lambda r: r.update(schema_version=99), "row schema version 99"),
])
def test_report_refuses_rows_it_cannot_use_with_file_and_line(tmp_path, capsys, mutate, expect):
    good, bad = make_row("full_ft"), make_row("lora")
    mutate(bad)
    d = _raw_rows(tmp_path / "r", [good, bad])
    assert main(["report", str(d), "--format", "md"]) == 2
    err = capsys.readouterr().err
    assert f"{d / 'results.jsonl'}:2" in err and expect in err and "Traceback" not in err


@pytest.mark.parametrize("value", [-math.inf, math.inf, math.nan])
def test_compare_rejects_non_finite_metrics(tmp_path, capsys, value):
    base = write_rows(tmp_path / "base", [make_row("lora", train={"gpu_energy_kwh": 1.0})])
    cand = _raw_rows(tmp_path / "cand", [make_row("lora", train={"gpu_energy_kwh": value})])
    assert main(["compare", str(base), str(cand)]) == 2
    assert "windows.train.gpu_energy_kwh is not a finite number" in capsys.readouterr().err


def test_torn_last_line_is_one_plain_warning(tmp_path):
    from conftest import run_cli

    d = write_rows(tmp_path / "r", [make_row("full_ft")])
    with (d / "results.jsonl").open("ab") as fh:
        fh.write(b'{"run_id": "half')
    proc = run_cli("report", str(d), "--format", "md")
    assert proc.returncode == 0, proc.stderr
    assert "energybench: warning:" in proc.stderr and "incomplete last line" in proc.stderr
    assert "UserWarning" not in proc.stderr and "warnings.warn" not in proc.stderr
