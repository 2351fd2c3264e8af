"""Measurement settings of a suite (the ``measure:`` block)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt


class MeasureSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nvml_interval_s: PositiveFloat = Field(0.1, description="NVML sampling interval (default 100 ms)")
    p0_kw: PositiveFloat | None = Field(None, description="READ's p0; default: the board's power limit from NVML")
    read_sample_period_s: PositiveFloat | None = Field(
        None, description="sample utilization for READ's estimate at this period (60 reproduces READ's protocol)"
    )
    host_energy: bool = Field(True, description="track CPU/RAM energy with CodeCarbon's offline tracker")
    country_iso_code: str = Field("USA", min_length=3, max_length=3, description="for CodeCarbon's emissions factor")
    latency_batch_size: PositiveInt = Field(1, description="inference latency batch size (READ: 1)")
    latency_warmup: int = Field(3, ge=0)
    latency_repeats: PositiveInt = Field(20)
    accounting: bool = Field(True, description="deterministic mem_model_bytes and FLOP accounting")
