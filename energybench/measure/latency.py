"""Inference latency and training step-time statistics.

Percentiles use linear interpolation between order statistics (NumPy's
default "linear" method), so p50 of an even count is the mean of the two
middle values, the same as the median.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Sequence

from energybench.measure.figures import MEASURED, Figures

LATENCY_FIELDS = ("infer_latency_ms_p50", "infer_latency_ms_p90", "infer_latency_ms_p99", "infer_latency_ms_mean")
STEP_FIELDS = ("step_time_s", "step_time_p90_s", "samples_per_s")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _synchronizer(sync: Any) -> Callable[[], None]:
    """``sync`` as a function: a callable as is; a CUDA device (or "cuda:i") → torch.cuda.synchronize; else nothing."""
    if callable(sync):
        return sync
    if sync is None or sync is False:
        return lambda: None
    import torch

    device = torch.device(sync) if isinstance(sync, str) else sync
    if isinstance(device, torch.device) and device.type == "cuda" and torch.cuda.is_available():
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def measure_latency(fn: Callable[[], Any], warmup: int, repeats: int, sync: Any = None,
                    clock: Callable[[], float] = time.perf_counter) -> Figures:
    """Time ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    ``sync`` is a ``torch.device`` (or "cuda:0", or a callable): on a CUDA
    device each timed call is bracketed by ``torch.cuda.synchronize`` so the
    time covers the kernels, not just their launch. On CPU nothing is needed.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    do_sync = _synchronizer(sync)
    for _ in range(warmup):
        fn()
    do_sync()
    times_ms = []
    for _ in range(repeats):
        do_sync()
        t0 = clock()
        fn()
        do_sync()
        times_ms.append(1000.0 * (clock() - t0))
    f = Figures()
    how = f"{repeats} timed calls after {warmup} warm-up"
    for name, q in (("infer_latency_ms_p50", 50), ("infer_latency_ms_p90", 90), ("infer_latency_ms_p99", 99)):
        f.put(name, percentile(times_ms, q), MEASURED, how)
    f.put("infer_latency_ms_mean", statistics.fmean(times_ms), MEASURED, how)
    return f


def step_time_stats(step_times_s: Sequence[float], batch_size: int | None = None, skip_first: int = 1) -> Figures:
    """Median and p90 of training step times, and samples/s at the median.

    The first ``skip_first`` steps pay one-time costs (allocator growth,
    kernel selection) and are dropped when enough steps remain. The step times
    themselves must be device-synchronized by the caller.
    """
    f = Figures()
    times = list(step_times_s[skip_first:]) if len(step_times_s) > skip_first else list(step_times_s)
    if not times:
        for name in STEP_FIELDS:
            f.null(name, "no training steps timed")
        return f
    how = f"{len(times)} steps" + (f", first {skip_first} dropped as warm-up" if len(times) < len(step_times_s) else "")
    median = statistics.median(times)
    f.put("step_time_s", median, MEASURED, "median, " + how)
    f.put("step_time_p90_s", percentile(times, 90), MEASURED, how)
    if batch_size is None:
        f.null("samples_per_s", "batch size not given")
    elif median <= 0:
        f.null("samples_per_s", "median step time is zero")
    else:
        f.put("samples_per_s", batch_size / median, MEASURED, "batch size / median step time")
    return f
