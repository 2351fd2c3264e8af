"""Latency percentiles and step-time statistics against NumPy on known durations."""

from __future__ import annotations

import numpy as np
import pytest

from energybench.measure.latency import measure_latency, step_time_stats


class SteppingClock:
    """Each call to ``fn`` advances time by the next scripted duration (seconds)."""

    def __init__(self, durations):
        self.t, self.durations = 0.0, list(durations)

    def __call__(self):
        return self.t

    def fn(self):
        self.t += self.durations.pop(0)


def test_latency_percentiles_match_numpy_on_the_timed_calls_only():
    warm = [1.0, 1.0]  # slow warm-up calls must not count
    timed = [0.010, 0.012, 0.011, 0.030, 0.009, 0.013, 0.010, 0.050, 0.011, 0.012]
    clock = SteppingClock(warm + timed)
    f = measure_latency(clock.fn, warmup=2, repeats=len(timed), clock=clock)
    ms = np.array(timed) * 1000
    assert f.values["infer_latency_ms_p50"] == pytest.approx(np.percentile(ms, 50))
    assert f.values["infer_latency_ms_p90"] == pytest.approx(np.percentile(ms, 90))
    assert f.values["infer_latency_ms_p99"] == pytest.approx(np.percentile(ms, 99))
    assert f.values["infer_latency_ms_mean"] == pytest.approx(ms.mean())
    assert set(f.provenance.values()) == {"measured"}


def test_latency_synchronizes_around_every_timed_call():
    events = []
    measure_latency(lambda: events.append("call"), warmup=1, repeats=3, sync=lambda: events.append("sync"))
    timed = events[events.index("sync"):]
    assert timed == ["sync"] + ["sync", "call", "sync"] * 3


def test_step_time_stats_drop_the_first_step_and_match_numpy():
    times = [2.5, 0.10, 0.12, 0.11, 0.20, 0.09, 0.10]
    f = step_time_stats(times, batch_size=16)
    rest = np.array(times[1:])
    assert f.values["step_time_s"] == pytest.approx(np.median(rest))
    assert f.values["step_time_p90_s"] == pytest.approx(np.percentile(rest, 90))
    assert f.values["samples_per_s"] == pytest.approx(16 / np.median(rest))


def test_step_time_stats_without_steps_are_null_with_reason():
    f = step_time_stats([], batch_size=8)
    assert f.values["step_time_s"] is None and f.reasons["step_time_s"] == "no training steps timed"
