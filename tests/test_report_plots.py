"""Figures are real PNGs with content; a missing axis is replaced by one that exists, and the figure says so."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from rowfactory import NO_GPU, make_row, write_rows

from energybench.report.build import load_frame, write_report
from energybench.report.plots import budget_heatmaps, live_ranks, pareto_front

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_nontrivial_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000
    pixels = mpimg.imread(path)[..., :3]
    assert pixels.std() > 0.02, "single-coloured image"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_pareto_front_keeps_exactly_the_undominated_points():
    # (cost, quality): B is dominated by A (costs more, scores less); D ties A's cost with a better score
    pts = {"A": (1.0, 70.0), "B": (2.0, 65.0), "C": (3.0, 80.0), "D": (1.0, 72.0), "E": (0.5, 50.0)}
    names = list(pts)
    front = {names[i] for i in pareto_front(list(pts.values()))}
    assert front == {"E", "D", "C"}


def _rows(gpu: bool):
    rows = []
    for m, cost, score in (("full_ft", 4e-3, 80.0), ("bitfit", 1e-3, 60.0), ("lora", 2e-3, 55.0)):
        for t in ("a", "b"):
            for s in (0, 1):
                e = cost * (1 + 0.05 * s) if gpu else None
                rows.append(make_row(m, t, s, score=score + s,
                                     train={"gpu_energy_kwh": e, "gpu_energy_read_kwh": e * 0.8 if gpu else None,
                                            "peak_gpu_mem_bytes": 3e6 * cost / 1e-3 if gpu else None,
                                            "wall_s": 100 * cost / 1e-3 + s},
                                     accounting={"mem_model_bytes": int(2e6 * cost / 1e-3)}))
    return rows


def test_quality_energy_and_memory_plots_are_nontrivial_pngs_when_gpu_energy_exists(tmp_path):
    files = write_report([write_rows(tmp_path, _rows(gpu=True))], tmp_path, formats=("md", "png"))
    names = {f.name for f in files}
    assert {"quality_energy_tiny-t5.png", "memory_tiny-t5.png", "read_estimate_vs_counter.png"} <= names
    for n in ("quality_energy_tiny-t5.png", "memory_tiny-t5.png", "read_estimate_vs_counter.png"):
        assert_nontrivial_png(tmp_path / n)
    md = (tmp_path / "report.md").read_text()
    assert "![Quality vs training energy — tiny-t5](quality_energy_tiny-t5.png)" in md
    assert "fallback" not in md
    # READ's estimate is 0.8 × the counter in every row → −20% on average
    assert "by -20.0% on average" in md


def test_quality_plot_falls_back_to_wall_time_and_names_it_when_gpu_energy_is_null_everywhere(tmp_path):
    from energybench.report.plots import quality_vs_cost

    write_rows(tmp_path, _rows(gpu=False))
    frame = load_frame([tmp_path])
    plot = quality_vs_cost(frame, "tiny-t5")
    assert plot.png is not None
    assert "wall time" in plot.xlabel and "no energy figure" in plot.xlabel
    assert "GPU energy counter not available" in plot.caption and NO_GPU in plot.caption


def test_quality_plot_prefers_an_estimated_host_energy_over_wall_time_and_labels_it_an_estimate(tmp_path):
    from energybench.report.plots import quality_vs_cost

    tdp = "CodeCarbon TDP model: RAPL not readable"
    rows = [make_row(m, "a", s, score=60.0 + s, train={"gpu_energy_kwh": None,
                                                      "cpu_energy_kwh": (c * (1 + s / 10), "estimated", tdp),
                                                      "ram_energy_kwh": (1e-4, "estimated", tdp)})
            for m, c in (("full_ft", 3e-3), ("lora", 1e-3)) for s in (0, 1)]
    plot = quality_vs_cost(load_frame([write_rows(tmp_path, rows)]), "tiny-t5")
    assert plot.xlabel.startswith("training CPU+RAM energy (CodeCarbon) — an estimate (Wh")
    assert "GPU energy counter not available" in plot.caption


def test_read_vs_counter_is_skipped_with_the_reason_when_no_run_has_gpu_data(tmp_path):
    files = write_report([write_rows(tmp_path, _rows(gpu=False))], tmp_path, formats=("md", "png"))
    assert "read_estimate_vs_counter.png" not in {f.name for f in files}
    md = (tmp_path / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if "READ's energy estimate vs NVML counter" in ln)
    assert "not drawn" in line and NO_GPU in line
    assert_nontrivial_png(tmp_path / "quality_energy_tiny-t5.png")
    assert_nontrivial_png(tmp_path / "memory_tiny-t5.png")


def test_live_ranks_read_adalora_masks_and_dydora_counts():
    adalora = {"rank_pattern": {"encoder.q": [True, False, True, True], "encoder.v": [False, False, True, False]}}
    dydora = {"budget": {"encoder.q": 5, "encoder.v": 2}}
    nested = {"budget": {"live_ranks": {"m": 3}, "total": 3}}
    assert live_ranks(adalora) == {"encoder.q": 3.0, "encoder.v": 1.0}
    assert live_ranks(dydora) == {"encoder.q": 5.0, "encoder.v": 2.0}
    assert live_ranks(nested) == {"m": 3.0}
    assert live_ranks({"history": []}) is None


def test_budget_heatmaps_one_per_budgeted_method_written_as_png(tmp_path):
    layers = [f"base_model.model.encoder.block.{i}.layer.0.SelfAttention.{p}" for i in range(4) for p in "qv"]
    rows = []
    for s in (0, 1):
        for t in ("a", "b"):
            budget = {n: (i + s) % 9 for i, n in enumerate(layers)}
            rows.append(make_row("dydora", t, s, method_info={"budget": budget}))
            rows.append(make_row("adalora", t, s, method_info={
                "rank_pattern": {n: [j < (i % 4) + 1 for j in range(12)] for i, n in enumerate(layers)}}))
            rows.append(make_row("lora", t, s))
    write_rows(tmp_path, rows)
    plots = budget_heatmaps(rows)
    assert sorted(p.name for p in plots) == ["budget_tiny-t5_adalora.png", "budget_tiny-t5_dydora.png"]
    dydora = next(p for p in plots if "dydora" in p.name)
    # total live rank per task = mean over seeds of the per-seed sums
    expected_total = np.mean([sum((i + s) % 9 for i in range(len(layers))) for s in (0, 1)])
    assert f"a {expected_total:.3g}" in dydora.caption
    files = write_report([tmp_path], tmp_path, formats=("png",))
    for name in ("budget_tiny-t5_adalora.png", "budget_tiny-t5_dydora.png"):
        assert tmp_path / name in files
        assert_nontrivial_png(tmp_path / name)


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_a_report_with_only_failed_runs_still_renders(tmp_path, fmt):
    write_rows(tmp_path, [make_row("lora", "a", 0, status="failed", error="boom")])
    write_report([tmp_path], tmp_path, formats=(fmt,))
    text = (tmp_path / f"report.{fmt}").read_text()
    assert "No run finished successfully" in text and "boom" in text


def test_memory_figure_stacks_the_parts_and_states_the_cuda_peak_over_the_modelled_bytes(tmp_path):
    """The caption's ratio is each run's measured peak ÷ its mem_model_bytes, averaged per method; the parts
    stack to the total (their sum is what mem_model_bytes is)."""
    rows = []
    for m, (p, g, o, a), peaks in (("full_ft", (400, 400, 800, 2400), (5000, 6000)),
                                   ("lora", (400, 8, 16, 1576), (2600, 3000))):
        for s, peak in zip((0, 1), peaks):
            acc = {"mem_params_bytes": p, "mem_grads_bytes": g, "mem_optimizer_bytes": o, "mem_activations_bytes": a,
                   "mem_model_bytes": p + g + o + a}
            rows.append(make_row(m, "a", s, train={"gpu_energy_kwh": 1e-3, "peak_gpu_mem_bytes": peak},
                                 accounting=acc))
    write_report([write_rows(tmp_path, rows)], tmp_path, formats=("md", "png"))
    md = (tmp_path / "report.md").read_text()
    # by hand: full_ft (5000/4000 + 6000/4000)/2 = 1.375; lora (2600/2000 + 3000/2000)/2 = 1.40
    assert "Measured CUDA peak ÷ modelled bytes" in md and "full_ft 1.38" in md and "lora 1.40" in md
    assert "Stacked: mem_model_bytes by part" in md
    assert_nontrivial_png(tmp_path / "memory_tiny-t5.png")
