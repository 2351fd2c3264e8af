"""READ Table 1 / Table 3 cells equal the means of the rows they summarise; null cells say why."""

from __future__ import annotations

import math
import re
import statistics

import pandas as pd
import pytest
from rowfactory import NO_GPU, make_row, write_rows

from energybench.report.build import write_report

# energy (kWh) per (method, task, seed); memory (bytes) per (method, task)
ENERGY = {("full_ft", "a"): [1.0e-3, 1.2e-3, 1.1e-3], ("full_ft", "b"): [2.0e-3, 2.2e-3, 2.4e-3],
          ("lora", "a"): [0.5e-3, 0.6e-3, 0.4e-3], ("lora", "b"): [0.9e-3, 1.0e-3, 1.1e-3]}
MEM = {("full_ft", "a"): 1000, ("full_ft", "b"): 3000, ("lora", "a"): 400, ("lora", "b"): 600}


def _grid(tmp_path, **overrides):
    rows = []
    for (method, task), energies in ENERGY.items():
        for seed, e in enumerate(energies):
            rows.append(make_row(method, task, seed, score=60.0 + seed,
                                 train={"gpu_energy_kwh": e, "gpu_energy_read_kwh": 1.1 * e,
                                        "peak_gpu_mem_bytes": 2 * MEM[(method, task)]},
                                 inference={"infer_latency_ms_p50": 3.0 + seed, "infer_latency_ms_p99": 5.0},
                                 accounting={"mem_model_bytes": MEM[(method, task)], "train_flops": 1e9},
                                 **overrides))
    return write_rows(tmp_path, rows)


def test_efficiency_sums_energy_over_tasks_averages_memory_then_takes_mean_and_std_over_seeds(tmp_path):
    write_report([_grid(tmp_path)], tmp_path)
    eff = pd.read_csv(tmp_path / "efficiency.csv").set_index("method")
    ft_per_seed = [ENERGY[("full_ft", "a")][s] + ENERGY[("full_ft", "b")][s] for s in range(3)]
    lora_per_seed = [ENERGY[("lora", "a")][s] + ENERGY[("lora", "b")][s] for s in range(3)]
    assert eff.loc["full_ft", "train_gpu_energy_kwh_mean"] == pytest.approx(statistics.mean(ft_per_seed))
    assert eff.loc["full_ft", "train_gpu_energy_kwh_std"] == pytest.approx(statistics.stdev(ft_per_seed))
    assert eff.loc["lora", "train_gpu_energy_kwh_pct_of_baseline"] == pytest.approx(
        100 * statistics.mean(lora_per_seed) / statistics.mean(ft_per_seed))
    assert eff.loc["lora", "train_gpu_energy_read_kwh_mean"] == pytest.approx(1.1 * statistics.mean(lora_per_seed))
    assert eff.loc["lora", "mem_model_bytes_mean"] == pytest.approx((400 + 600) / 2)
    assert eff.loc["lora", "mem_model_bytes_pct_of_baseline"] == pytest.approx(100 * 500 / 2000)
    assert eff.loc["lora", "train_peak_gpu_mem_bytes_mean"] == pytest.approx(2 * 500)
    assert eff.loc["lora", "inference_infer_latency_ms_p50_mean"] == pytest.approx(statistics.mean([3, 4, 5]))
    assert eff.loc["full_ft", "mem_model_bytes_pct_of_baseline"] == pytest.approx(100.0)
    quality = pd.read_csv(tmp_path / "report.csv").set_index("method")
    assert quality.loc["lora", "gpu_energy_kwh_mean"] == pytest.approx(statistics.mean(lora_per_seed))
    assert quality.loc["lora", "gpu_energy_pct_of_baseline"] == pytest.approx(
        100 * statistics.mean(lora_per_seed) / statistics.mean(ft_per_seed))


def test_markdown_shows_baseline_first_and_percent_of_it_in_each_efficiency_cell(tmp_path):
    write_report([_grid(tmp_path)], tmp_path)
    md = (tmp_path / "report.md").read_text()
    eff = md[md.index("### Efficiency"):]
    lines = [ln for ln in eff.splitlines() if ln.startswith("| ")]
    assert lines[1].startswith("| full_ft |") and lines[2].startswith("| lora |")
    # mem_model_bytes: 2000 B (full_ft) → shown in KiB; lora 500 B is 25% of it
    assert "(25%)" in lines[2] and "(100%)" in lines[1]


def test_null_gpu_figures_print_a_dash_and_a_footnote_with_the_reason_never_a_zero(tmp_path):
    """A figure null in some rows: a dash and a footnote in those cells. A figure null in every row: its
    column collapses into one line under the table naming it, with the footnote giving the reason."""
    rows = [make_row(m, t, s, train={"gpu_energy_kwh": None if m == "lora" else 0.002, "gpu_energy_read_kwh": None,
                                     "peak_gpu_mem_bytes": None},
                     accounting={"mem_model_bytes": 100})
            for m in ("full_ft", "lora") for t in ("a", "b") for s in (0, 1)]
    write_report([write_rows(tmp_path, rows)], tmp_path)
    md = (tmp_path / "report.md").read_text()
    quality = md[md.index("### Quality"):md.index("### Efficiency")]
    header = next(ln for ln in quality.splitlines() if ln.startswith("| Method |"))
    quality_lora = next(ln for ln in quality.splitlines() if ln.startswith("| lora |"))
    cells = [c.strip() for c in quality_lora.strip("|").split("|")]
    energy_col = next(i for i, h in enumerate(c.strip() for c in header.strip("|").split("|"))
                      if h.startswith("GPU energy, train, all tasks"))
    energy = cells[energy_col]
    assert re.fullmatch(r"—[¹²³⁴⁵⁶⁷⁸⁹⁰˒]+", energy)
    notes = md[md.index("## Notes"):]
    mark = energy[1:]
    assert any(line.startswith(mark + " ") and NO_GPU in line for line in notes.splitlines())
    # a figure no row recorded at all (CPU+RAM energy) is named once under its table, with its reason
    efficiency = md[md.index("### Efficiency"):md.index("## Notes")]
    eff_header = next(ln for ln in efficiency.splitlines() if ln.startswith("| Method |"))
    assert "Train CPU+RAM energy" not in eff_header and "READ estimate" not in eff_header
    collapsed = next(ln for ln in efficiency.splitlines() if ln.startswith("No value in any row, so not shown:"))
    cpu = re.search(r"Train CPU\+RAM energy[^;]*?([¹²³⁴⁵⁶⁷⁸⁹⁰˒]+)[;.]", collapsed)
    assert cpu, collapsed
    number = next(line for line in notes.splitlines() if line.startswith(cpu.group(1).split("˒")[0] + " "))
    assert "not recorded by the run" in number
    csv_header = (tmp_path / "efficiency.csv").read_text().splitlines()[0]
    assert "gpu_energy_read_kwh_mean" in csv_header and "infer_latency_ms_p99_note" in csv_header  # CSV keeps all
    eff = pd.read_csv(tmp_path / "efficiency.csv").set_index("method")
    assert math.isnan(eff.loc["lora", "train_gpu_energy_kwh_mean"])
    assert NO_GPU in eff.loc["lora", "train_gpu_energy_kwh_note"]
    assert not re.search(r"\| 0(\.0+)? ", md), "a null must never print as zero"


def test_a_cell_resting_on_fewer_seeds_says_so(tmp_path):
    rows = [make_row("full_ft", "a", s, train={"gpu_energy_kwh": None if s == 2 else 1e-3 * (s + 1)})
            for s in range(3)]
    write_report([write_rows(tmp_path, rows)], tmp_path)
    eff = pd.read_csv(tmp_path / "efficiency.csv").set_index("method")
    assert eff.loc["full_ft", "train_gpu_energy_kwh_mean"] == pytest.approx(1.5e-3)
    assert eff.loc["full_ft", "train_gpu_energy_kwh_seeds"] == 2
    assert "mean over 2 of 3 seeds" in eff.loc["full_ft", "train_gpu_energy_kwh_note"]
    assert NO_GPU in eff.loc["full_ft", "train_gpu_energy_kwh_note"]


def test_estimated_host_energy_is_footnoted_as_an_estimate(tmp_path):
    tdp = "CodeCarbon TDP estimate: RAPL not readable"
    rows = [make_row("full_ft", "a", s, train={"cpu_energy_kwh": (2e-3, "estimated", tdp),
                                               "ram_energy_kwh": (1e-3, "estimated", tdp)}) for s in (0, 1)]
    write_report([write_rows(tmp_path, rows)], tmp_path)
    eff = pd.read_csv(tmp_path / "efficiency.csv").set_index("method")
    assert eff.loc["full_ft", "train_host_energy_kwh_mean"] == pytest.approx(3e-3)
    assert "an estimate, not a measurement" in eff.loc["full_ft", "train_host_energy_kwh_note"]
    assert tdp in (tmp_path / "report.md").read_text()


def test_baseline_method_option_changes_the_reference_and_a_missing_baseline_is_explained(tmp_path):
    _grid(tmp_path)
    write_report([tmp_path], tmp_path / "vs_lora", baseline_method="lora")
    eff = pd.read_csv(tmp_path / "vs_lora" / "efficiency.csv").set_index("method")
    assert eff.index[0] == "lora"
    assert eff.loc["full_ft", "mem_model_bytes_pct_of_baseline"] == pytest.approx(100 * 2000 / 500)
    write_report([tmp_path], tmp_path / "vs_none", baseline_method="read")
    eff = pd.read_csv(tmp_path / "vs_none" / "efficiency.csv").set_index("method")
    assert eff["mem_model_bytes_pct_of_baseline"].isna().all()
    assert "no read runs on this backbone" in eff.loc["lora", "mem_model_bytes_note"]


def test_several_run_directories_combine_into_one_report_with_a_section_per_backbone(tmp_path):
    a = write_rows(tmp_path / "a", [make_row("lora", "t", s, backbone="tiny-t5", score=40.0 + s) for s in (0, 1)])
    b = write_rows(tmp_path / "b", [make_row("lora", "t", s, backbone="t5-small", score=70.0 + 2 * s)
                                    for s in (0, 1)] + [make_row("lora", "t", 2, backbone="t5-small", status="failed",
                                                                 error="CUDA out of memory")])
    write_report([a, b], tmp_path / "out", formats=("md", "csv"))
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Backbone: tiny-t5" in md and "## Backbone: t5-small" in md
    assert "| t5-small | t | lora | 2 | CUDA out of memory |" in md
    q = pd.read_csv(tmp_path / "out" / "report.csv").set_index("backbone")
    assert q.loc["tiny-t5", "t_mean"] == pytest.approx(40.5)
    assert q.loc["t5-small", "t_mean"] == pytest.approx(71.0)
