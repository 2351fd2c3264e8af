"""The Meter's two additions: warnings gathered from every tracker, and merging outside figures."""

from __future__ import annotations

from energybench.measure.figures import Figures
from energybench.measure.latency import step_time_stats
from energybench.measure.meter import Meter


class Warns:
    def __init__(self, *warnings):
        self.warnings = list(warnings)

    def start(self): ...
    def begin(self, window): ...
    def stop(self): ...

    def end(self, window):
        f = Figures()
        f.put("x", 1)
        f.values["warnings"] = list(self.warnings)
        return f


def test_window_warnings_gather_every_trackers_warnings_once():
    meter = Meter([Warns("GPU shared", "mapping by index"), Warns("GPU shared", "no RAPL")])
    with meter, meter.window("train"):
        pass
    res = meter.results["train"]
    assert sorted(res["warnings"]) == ["GPU shared", "mapping by index", "no RAPL"]
    assert "warnings" not in res["provenance"]


def test_merge_adds_outside_figures_with_their_provenance():
    meter = Meter()
    with meter, meter.window("train"):
        pass
    res = meter.results["train"]
    res.merge(step_time_stats([1.0, 0.2, 0.4], batch_size=8))
    assert abs(res["step_time_s"] - 0.3) < 1e-12  # median of the steps after the first
    assert res["provenance"]["samples_per_s"] == "measured"
    assert res["warnings"] == []
