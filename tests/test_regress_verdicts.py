"""Compare's verdicts at their edges, and a run recorded twice: the latest row counts everywhere.

``results.latest_by_run`` documents the rule: the last row of a run_id supersedes earlier ones (a retried
run supersedes its failure). The report, compare and the runner's skip all read rows through it, so a
duplicated run is resolved the same way by each: the latest attempt, never the first.
"""

from __future__ import annotations

import pytest
from rowfactory import make_row, write_rows

from energybench.cli import main
from energybench.regress.thresholds import Threshold
from energybench.regress.verdicts import exact_verdict, noisy_verdict
from energybench.report.build import load_frame
from energybench.results import finished_run_ids, latest_by_run


@pytest.fixture(autouse=True)
def _no_project_config(tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


ABS = Threshold(10.0, relative=False)
REL = Threshold(0.25, relative=True)  # 25 %: exact in binary, so "exactly at the threshold" is exact


@pytest.mark.parametrize("b, c, t, verdict", [
    (1000.0, 1000.0, ABS, "same"),
    (1000.0, 1000.0, Threshold(0.0, False), "same"),
    (1000.0, 1010.0, ABS, "within threshold"),   # growth exactly at the threshold is tolerated
    (1000.0, 1010.5, ABS, "regression"),
    (1000.0, 990.0, ABS, "within threshold"),    # a drop exactly at the threshold is not yet an improvement
    (1000.0, 989.5, ABS, "improvement"),
    (4.0, 5.0, REL, "within threshold"),         # 25 % of 4 = 1
    (4.0, 5.25, REL, "regression"),
    (-4.0, -3.0, REL, "within threshold"),       # relative to |baseline|
    (1000.0, 1001.0, Threshold(0.0, False), "regression"),
    (1000.0, 999.0, Threshold(0.0, False), "improvement"),
])
def test_exact_verdicts_at_and_around_the_threshold(b, c, t, verdict):
    assert exact_verdict(b, c, t) == verdict


BASE = [1.0, 2.0, 3.0, 4.0, 5.0]


def test_noisy_identical_samples_are_the_same():
    assert noisy_verdict(BASE, list(BASE), REL, 0.05) == ("same", "identical samples (n=5/5)")


def test_noisy_growth_exactly_at_the_threshold_is_within_it():
    cand = [x * 1.25 for x in BASE]  # every seed and the mean exactly 25 % up
    verdict, confidence = noisy_verdict(BASE, cand, REL, 0.05)
    assert verdict == "within threshold" and confidence.startswith("p=")


def test_noisy_growth_past_the_threshold_on_every_seed_is_a_confident_regression():
    tight = [4.0, 4.1, 3.9, 4.2, 3.8]
    verdict, confidence = noisy_verdict(tight, [x * 1.5 for x in tight], REL, 0.05)
    assert verdict == "regression" and "n=5/5" in confidence
    verdict, _ = noisy_verdict(tight, [x * 0.5 for x in tight], REL, 0.05)
    assert verdict == "improvement"


def test_noisy_single_samples_fall_back_to_the_threshold_on_the_means():
    assert noisy_verdict([4.0], [5.0], REL, 0.05)[0] == "within threshold"
    assert noisy_verdict([4.0], [5.5], REL, 0.05)[0] == "regression"
    assert noisy_verdict([4.0], [4.0], REL, 0.05)[0] == "same"


def _mem_row(mem, status="ok"):
    return make_row("lora", "a", 0, status=status, error=None if status == "ok" else "RuntimeError: boom",
                    accounting={"mem_model_bytes": mem}, score=50.0)


def test_identical_sides_say_same_on_each_deterministic_figure(tmp_path, capsys):
    a = write_rows(tmp_path / "a", [_mem_row(1000)])
    b = write_rows(tmp_path / "b", [_mem_row(1000)])
    assert main(["compare", str(a), str(b), "--metrics", "mem_model_bytes"]) == 0
    assert "Verdicts: same 1." in capsys.readouterr().out
    assert main(["compare", str(a), str(b), "--metrics", "mem_model_bytes", "--all"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "| mem_model_bytes |" in ln)
    assert "| same |" in line


def test_growth_exactly_at_the_threshold_passes_the_gate(tmp_path, capsys):
    a = write_rows(tmp_path / "a", [_mem_row(1000)])
    b = write_rows(tmp_path / "b", [_mem_row(1010)])
    assert main(["compare", str(a), str(b), "--metrics", "mem_model_bytes", "--threshold", "mem_model_bytes=10"]) == 0
    assert "| within threshold |" in capsys.readouterr().out
    assert main(["compare", str(a), str(b), "--metrics", "mem_model_bytes", "--threshold", "mem_model_bytes=9"]) == 1


def test_a_run_recorded_twice_is_judged_on_its_latest_row(tmp_path, capsys):
    base = write_rows(tmp_path / "base", [_mem_row(1000)])
    later_fixed = write_rows(tmp_path / "fixed", [_mem_row(5000), _mem_row(1000)])
    later_worse = write_rows(tmp_path / "worse", [_mem_row(1000), _mem_row(5000)])
    later_failed = write_rows(tmp_path / "failed", [_mem_row(1000), _mem_row(0, status="failed")])
    assert main(["compare", str(base), str(later_fixed), "--metrics", "mem_model_bytes"]) == 0
    assert main(["compare", str(base), str(later_worse), "--metrics", "mem_model_bytes"]) == 1
    capsys.readouterr()
    assert main(["compare", str(base), str(later_failed), "--metrics", "mem_model_bytes"]) == 1
    assert "**failed in candidate**" in capsys.readouterr().out
    # as a baseline, too: the latest row is what the candidate is held to
    assert main(["compare", str(later_worse), str(base), "--metrics", "mem_model_bytes"]) == 0
    assert "| improvement |" in capsys.readouterr().out


def test_latest_row_wins_in_the_report_the_skip_set_and_the_rule_itself(tmp_path):
    d = write_rows(tmp_path / "run", [make_row("lora", "a", 0, score=50.0), make_row("lora", "a", 0, score=70.0),
                                      make_row("bitfit", "a", 0, score=60.0),
                                      make_row("full_ft", "a", 0, score=80.0),
                                      make_row("full_ft", "a", 0, status="failed", error="x")])
    frame = load_frame([d])
    assert len(frame) == 3
    by = frame.set_index("method")
    assert by.loc["lora", "score"] == 70.0 and by.loc["bitfit", "score"] == 60.0
    assert by.loc["full_ft", "status"] == "failed"
    assert finished_run_ids(d / "results.jsonl") == {"tiny-t5-a-lora-0-0.001", "tiny-t5-a-bitfit-0-0.001"}
    rows = [{"run_id": "x", "v": 1}, {"run_id": "y", "v": 2}, {"run_id": "x", "v": 3}]
    assert latest_by_run(rows) == {"x": {"run_id": "x", "v": 3}, "y": {"run_id": "y", "v": 2}}


def test_report_cell_of_a_run_recorded_twice(tmp_path):
    """Within one results.jsonl the latest row counts; the same run in two run directories is averaged
    (report.tables.per_seed documents it)."""
    import pandas as pd

    from energybench.report.build import write_report

    one = write_rows(tmp_path / "one", [make_row("lora", "a", 0, score=50.0), make_row("lora", "a", 0, score=70.0)])
    write_report([one], tmp_path / "rep1", formats=("csv",))
    assert pd.read_csv(tmp_path / "rep1" / "report.csv").set_index("method").loc["lora", "a_mean"] == 70.0
    two = write_rows(tmp_path / "two", [make_row("lora", "a", 0, score=40.0)])
    write_report([one, two], tmp_path / "rep2", formats=("csv",))
    assert pd.read_csv(tmp_path / "rep2" / "report.csv").set_index("method").loc["lora", "a_mean"] == 55.0


def test_five_against_two_seeds_can_reach_significance_so_the_test_is_used():
    # the smallest one-sided p of 5 vs 2 samples is 1 / C(7, 2) = 1/21 < 0.05; 5 vs 1 cannot (1/6)
    tight = [4.0, 4.1, 3.9, 4.2, 3.8]
    verdict, confidence = noisy_verdict(tight, [6.0, 6.3], REL, 0.05)
    assert verdict == "regression" and confidence.startswith(f"p={1 / 21:.3g} ") and "n=5/2" in confidence
    verdict, confidence = noisy_verdict(tight, [6.0], REL, 0.05)
    assert verdict == "regression" and confidence.startswith("low confidence (5 vs 1 samples cannot reach")
    verdict, confidence = noisy_verdict([6.0, 6.3], tight, REL, 0.05)  # 2 baseline seeds against 5
    assert verdict == "improvement" and confidence.startswith(f"p={1 / 21:.3g} ") and "n=2/5" in confidence


def test_a_noisy_figure_null_on_one_side_is_not_comparable_and_says_which_side_lacks_it(tmp_path, capsys):
    import json

    from rowfactory import NO_GPU

    def side(name, energy):
        return write_rows(tmp_path / name, [make_row("lora", "a", s, train={"gpu_energy_kwh": energy})
                                            for s in (0, 1)])

    have, lack = side("have", 1e-3), side("lack", None)
    for base, cand, who in ((have, lack, "candidate"), (lack, have, "baseline")):
        assert main(["compare", str(base), str(cand), "--metrics", "gpu_energy_kwh", "--format", "json"]) == 0
        (f,) = [f for f in json.loads(capsys.readouterr().out)["findings"] if f["metric"] == "gpu_energy_kwh"]
        assert f["verdict"] == "not comparable" and f["note"] == f"{who}: {NO_GPU}"
        assert (f["task"], f["method"]) == ("a", "lora") and f["backbone"] == make_row("lora", "a", 0)["backbone"]
