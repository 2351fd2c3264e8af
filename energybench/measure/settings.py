"""Measurement settings of a suite (the ``measure:`` block).

Every field has a default, so a suite that says nothing about measurement
gets: NVML sampled at 10 Hz, READ's estimate with the board's default power
limit as p0, CodeCarbon's offline tracker for CPU/RAM, and latency at batch 1.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt


class MeasureSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- GPU (NVML) ---------------------------------------------------------
    gpu_energy: bool = Field(True, description="sample NVML (energy counter, power, utilization, memory) on the run's GPUs")
    nvml_interval_s: PositiveFloat = Field(0.1, ge=0.005, le=60.0, description="NVML sampling interval (default 100 ms)")
    nvml_min_samples: int = Field(
        4, ge=2, description="a window with fewer power samples per device than this is flagged low-confidence"
    )
    nvml_counter_update_s: PositiveFloat = Field(
        0.1, le=10.0,
        description="update period of NVML's energy counter (~20-100 ms by board); shorter windows are low-confidence",
    )
    p0_kw: PositiveFloat | None = Field(None, description="READ's p0; default: the board's power limit from NVML")
    read_sample_period_s: PositiveFloat | None = Field(
        None, description="sample utilization for READ's estimate at this period (60 reproduces READ's protocol)"
    )

    # --- host (CodeCarbon) ---------------------------------------------------
    host_energy: bool = Field(True, description="track CPU/RAM energy with CodeCarbon's offline tracker")
    country_iso_code: str = Field("USA", min_length=3, max_length=3, description="for CodeCarbon's emissions factor")
    host_measure_power_s: PositiveFloat = Field(
        15.0, le=600.0,
        description="CodeCarbon's periodic measurement interval between window boundaries (it also measures at each boundary)",
    )
    host_tracking_mode: Literal["machine", "process"] = Field(
        "process", description="CodeCarbon tracking_mode: this run's process tree's share of CPU load and its own "
        "memory (default), or the whole machine (double-counts runs side by side with --jobs)"
    )

    # --- memory --------------------------------------------------------------
    rss_interval_s: PositiveFloat = Field(
        0.05, le=10.0,
        description="RSS sampling interval, used only where the kernel's peak-RSS reset (/proc/self/clear_refs) is unavailable",
    )

    # --- latency and accounting ----------------------------------------------
    latency_batch_size: PositiveInt = Field(1, le=65_536, description="inference latency batch size (READ: 1)")
    latency_warmup: int = Field(3, ge=0, le=100_000)
    latency_repeats: PositiveInt = Field(20, le=100_000)
    accounting: bool = Field(True, description="deterministic mem_model_bytes and FLOP accounting")
    accounting_mode: Literal["fake", "real"] = Field(
        "fake", description="fake: fake tensors, seconds at any scale; real: a real CPU step, for cross-checks")
    accounting_semantics: Literal["cuda", "cpu"] = Field(
        "cuda", description="saved-for-backward tensors as the fused CUDA kernels keep them, or as the CPU's do")
