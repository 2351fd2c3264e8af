"""The regression gate: exact for deterministic figures, noise-aware for measured ones, exit 2 on bad input."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from conftest import run_cli
from rowfactory import make_row, write_rows

from energybench.cli import main
from energybench.regress.verdicts import min_one_sided_p

BASE_ENERGY = [1.00e-3, 1.04e-3, 0.97e-3, 1.02e-3, 0.99e-3]


@pytest.fixture(autouse=True)
def _no_project_config(tmp_path, monkeypatch):
    """Run from an empty directory so no pyproject.toml's [tool.energybench.compare] leaks in."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def _side(path, seeds=(0,), energy=lambda s: BASE_ENERGY[s], mem=1000, methods=("full_ft", "lora"), **kw):
    rows = [make_row(m, "a", s, train={"gpu_energy_kwh": energy(s), "step_time_s": 0.1},
                     accounting={"mem_model_bytes": mem + (0 if m == "full_ft" else -500), "train_flops": 7e9}, **kw)
            for m in methods for s in seeds]
    return write_rows(path, rows)


def _compare(capsys, *args):
    code = main(["compare", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _row_of(out: str, method: str, metric: str) -> str:
    return next(ln for ln in out.splitlines() if f"| {method} |" in ln and f"| {metric} |" in ln)


def test_identical_inputs_pass(tmp_path, capsys):
    a, b = _side(tmp_path / "a"), _side(tmp_path / "b")
    code, out, _ = _compare(capsys, a, b)
    assert code == 0 and "energybench compare: OK" in out


def test_mem_model_bytes_one_byte_larger_with_tolerance_zero_is_a_regression_naming_the_run(tmp_path, capsys):
    a, b = _side(tmp_path / "a"), _side(tmp_path / "b", mem=1001)
    code, out, _ = _compare(capsys, a, b, "--threshold", "mem_model_bytes=0")
    assert code == 1 and "REGRESSION" in out
    line = _row_of(out, "lora", "mem_model_bytes")
    assert "| tiny-t5 | a | lora |" in line and "| 500 | 501 |" in line and "**regression**" in line
    assert "+0.20%" in line  # (501 − 500) / 500


def test_a_smaller_deterministic_figure_is_reported_as_an_improvement_and_passes(tmp_path, capsys):
    a, b = _side(tmp_path / "a"), _side(tmp_path / "b", mem=990)
    code, out, _ = _compare(capsys, a, b, "--metrics", "deterministic")
    assert code == 0
    assert "| improvement |" in _row_of(out, "full_ft", "mem_model_bytes")


def test_energy_three_percent_higher_within_a_five_percent_threshold_passes(tmp_path, capsys):
    a = _side(tmp_path / "a")
    b = _side(tmp_path / "b", energy=lambda s: 1.03 * BASE_ENERGY[s])
    code, out, _ = _compare(capsys, a, b, "--threshold", "energy=5%")
    assert code == 0
    line = _row_of(out, "lora", "gpu_energy_kwh")
    assert "within threshold" in line and "+3.00%" in line


def test_one_seed_per_side_falls_back_to_the_threshold_and_says_low_confidence(tmp_path, capsys):
    a = _side(tmp_path / "a")
    b = _side(tmp_path / "b", energy=lambda s: 1.2 * BASE_ENERGY[s])
    code, out, _ = _compare(capsys, a, b, "--threshold", "energy=5%")
    assert code == 1
    line = _row_of(out, "lora", "gpu_energy_kwh")
    assert "**regression**" in line and "low confidence" in line and "one sample per side" in line


def test_energy_twenty_percent_higher_on_all_five_seeds_is_a_confident_regression(tmp_path, capsys):
    seeds = range(5)
    a = _side(tmp_path / "a", seeds=seeds)
    b = _side(tmp_path / "b", seeds=seeds, energy=lambda s: 1.2 * BASE_ENERGY[s])
    code, out, _ = _compare(capsys, a, b, "--threshold", "energy=5%", "--metrics", "energy")
    assert code == 1
    line = _row_of(out, "lora", "gpu_energy_kwh")
    # every candidate seed exceeds every baseline seed × 1.05: U = 25, exact one-sided p = 1 / C(10, 5)
    assert "**regression**" in line and f"p={1 / math.comb(10, 5):.3g}" in line and "n=5/5" in line
    assert "| 0,1,2,3,4 vs 0,1,2,3,4 |" in line


def test_energy_three_percent_higher_on_five_seeds_passes_and_noise_without_a_shift_is_not_flagged(tmp_path, capsys):
    seeds = range(5)
    a = _side(tmp_path / "a", seeds=seeds)
    b = _side(tmp_path / "b", seeds=seeds, energy=lambda s: 1.03 * BASE_ENERGY[s])
    code, out, _ = _compare(capsys, a, b, "--threshold", "energy=5%")
    assert code == 0
    # noisy samples whose mean rises past the threshold, but not consistently: inconclusive, not a failure
    c = _side(tmp_path / "c", seeds=seeds, energy=lambda s: [0.9e-3, 1.6e-3, 0.95e-3, 1.5e-3, 1.0e-3][s])
    code, out, _ = _compare(capsys, a, c, "--threshold", "energy=5%", "--metrics", "gpu_energy_kwh")
    assert code == 0
    assert "inconclusive" in _row_of(out, "lora", "gpu_energy_kwh")


def test_two_seeds_per_side_cannot_reach_significance_so_the_verdict_is_low_confidence(tmp_path, capsys):
    assert min_one_sided_p(2, 2) == pytest.approx(1 / 6)
    a = _side(tmp_path / "a", seeds=(0, 1))
    b = _side(tmp_path / "b", seeds=(0, 1), energy=lambda s: 1.5 * BASE_ENERGY[s])
    code, out, _ = _compare(capsys, a, b)
    assert code == 1 and "2 vs 2 samples cannot reach p < 0.05" in _row_of(out, "lora", "gpu_energy_kwh")


def test_deterministic_only_ignores_noisy_growth(tmp_path, capsys):
    a = _side(tmp_path / "a")
    b = _side(tmp_path / "b", energy=lambda s: 3 * BASE_ENERGY[s])
    code, out, _ = _compare(capsys, a, b, "--metrics", "deterministic")
    assert code == 0 and "gpu_energy_kwh" not in out


def test_thresholds_come_from_pyproject_and_the_command_line_overrides_them(tmp_path, capsys):
    (tmp_path / "cwd" / "pyproject.toml").write_text('[tool.energybench.compare]\nmem_model_bytes = "1%"\n')
    a, b = _side(tmp_path / "a"), _side(tmp_path / "b", mem=1001)
    code, out, _ = _compare(capsys, a, b, "--metrics", "deterministic")
    assert code == 0 and "within threshold" in _row_of(out, "lora", "mem_model_bytes")
    code, _, _ = _compare(capsys, a, b, "--metrics", "deterministic", "--threshold", "mem_model_bytes=0")
    assert code == 1


def test_added_missing_and_failed_runs_are_reported(tmp_path, capsys):
    a = _side(tmp_path / "a", methods=("full_ft", "lora", "bitfit"))
    b = _side(tmp_path / "b", methods=("full_ft", "lora", "dora"))
    code, out, _ = _compare(capsys, a, b, "--metrics", "deterministic")
    assert code == 0
    assert "### Missing from the candidate (1)" in out and "| tiny-t5 | a | bitfit | 0 |" in out
    assert "### Added in the candidate (1)" in out and "| tiny-t5 | a | dora | 0 |" in out
    write_rows(tmp_path / "b", [make_row("lora", "a", 0, status="failed", error="RuntimeError: boom")])
    code, out, _ = _compare(capsys, a, b, "--metrics", "deterministic")
    assert code == 1 and "**failed in candidate**" in out and "RuntimeError: boom" in out


def test_a_torn_last_line_is_a_missing_run_with_a_warning_and_fails_only_with_fail_on_missing(tmp_path, capsys):
    a = _side(tmp_path / "a")
    b = _side(tmp_path / "b")
    data = (b / "results.jsonl").read_bytes()
    (b / "results.jsonl").write_bytes(data[:-100])  # the lora run was interrupted mid-write
    code, out, err = _compare(capsys, a, b, "--metrics", "deterministic")
    assert code == 0 and "incomplete last line" in err
    assert "### Missing from the candidate (1)" in out and "| tiny-t5 | a | lora | 0 |" in out
    code, out, _ = _compare(capsys, a, b, "--metrics", "deterministic", "--fail-on-missing")
    assert code == 1 and "REGRESSION" in out


def test_baseline_export_keeps_ok_rows_only_and_compares_clean_against_its_source(tmp_path, capsys):
    run = _side(tmp_path / "run")
    write_rows(run, [make_row("bitfit", "a", 0, status="failed", error="x")])
    out_file = tmp_path / "reports" / "baselines" / "quickstart.json"
    assert main(["baseline", "export", str(run), "-o", str(out_file)]) == 0
    doc = json.loads(out_file.read_text())
    assert doc["format"] == "energybench-baseline" and doc["schema_version"] == 1
    assert {r["method"] for r in doc["rows"]} == {"full_ft", "lora"}
    assert all("method_info" not in r for r in doc["rows"])
    capsys.readouterr()
    code, out, _ = _compare(capsys, out_file, run, "--metrics", "deterministic")
    assert code == 0 and "baseline file" in out


def test_json_and_csv_outputs_carry_the_same_verdicts(tmp_path, capsys):
    a, b = _side(tmp_path / "a"), _side(tmp_path / "b", mem=1001)
    code, out, _ = _compare(capsys, a, b, "--metrics", "mem_model_bytes", "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["regressed"] is True
    assert {f["verdict"] for f in doc["findings"]} == {"regression"}
    code, out, _ = _compare(capsys, a, b, "--metrics", "mem_model_bytes", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1 and len(rows) == 2 and all(r["verdict"] == "regression" for r in rows)


def test_bad_inputs_exit_2_with_a_clear_message(tmp_path, capsys):
    good = _side(tmp_path / "good")
    code, _, err = _compare(capsys, tmp_path / "nope", good)
    assert code == 2 and "nope: no such file or directory" in err

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"rows": []}))
    code, _, err = _compare(capsys, wrong, good)
    assert code == 2 and "not an energybench baseline" in err

    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"format": "energybench-baseline", "schema_version": 99, "rows": []}))
    code, _, err = _compare(capsys, newer, good)
    assert code == 2 and "newer" in err

    schema = tmp_path / "schema.jsonl"
    schema.write_text(json.dumps({"backbone": "x", "task": "a"}) + "\n")
    code, _, err = _compare(capsys, schema, good)
    assert code == 2 and "schema.jsonl:1: not an energybench result row" in err and "run_id" in err

    torn = tmp_path / "torn"
    torn.mkdir()
    lines = (good / "results.jsonl").read_text().splitlines()
    (torn / "results.jsonl").write_text(lines[0] + "\n" + lines[1][:40] + "\n" + lines[1] + "\n")
    code, _, err = _compare(capsys, good, torn)
    assert code == 2 and "results.jsonl:2: not a JSON result row" in err

    code, _, err = _compare(capsys, good, good, "--threshold", "energy=lots")
    assert code == 2 and "not a number or a percentage" in err
    code, _, err = _compare(capsys, good, good, "--metrics", "joules")
    assert code == 2 and "unknown metric or group 'joules'" in err


def test_no_run_in_common_is_bad_input_asking_for_a_fresh_baseline(tmp_path, capsys):
    a = _side(tmp_path / "a")
    b = write_rows(tmp_path / "b", [make_row("lora", "a", 0, lr=5e-3)])  # another configuration → another run_id
    code, _, err = _compare(capsys, a, b)
    assert code == 2 and "refresh the baseline" in err


def test_console_script_exit_codes(tmp_path):
    a, b = _side(tmp_path / "a"), _side(tmp_path / "b", mem=1001)
    assert run_cli("compare", str(a), str(a), "--metrics", "deterministic").returncode == 0
    assert run_cli("compare", str(a), str(b), "--metrics", "deterministic").returncode == 1
    bad = run_cli("compare", str(tmp_path / "missing"), str(b))
    assert bad.returncode == 2 and "no such file or directory" in bad.stderr
