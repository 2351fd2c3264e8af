"""Where a suite's runs execute: the ``executor:`` block of a suite, overridable from the command line.

Kept apart from the executors themselves so that the suite schema can embed it
without importing Ray or NVML.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

RAY_INSTALL = "pip install 'energybench[ray]'"


class ExecutorError(RuntimeError):
    """The executor cannot start (bad settings, missing GPU, Ray absent or unreachable); nothing has run."""


class RayResources(BaseModel):
    """What each run's Ray task asks the cluster for."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    num_cpus: PositiveFloat = Field(1.0, description="CPUs reserved per run (also its torch thread count, rounded down)")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per run; None: 1 (÷ runs_per_gpu) when the suite "
                                   "may use CUDA and the cluster has GPUs, else 0")


class ExecutorSettings(BaseModel):
    """How many runs execute at once, and where.

    local: child processes on this machine; ``gpus`` pins one run per listed GPU
    (``runs_per_gpu`` to share a GPU deliberately), ``jobs`` runs CPU-only runs
    side by side. ray: one Ray task per run on ``ray_address`` (a local
    instance with ``jobs`` CPUs when None), lost tasks retried ``max_retries`` times.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["local", "ray"] = "local"
    jobs: PositiveInt = Field(1, description="local: CPU-only runs at once; ray without an address: the local "
                              "instance's CPUs")
    gpus: Literal["all"] | list[NonNegativeInt] | None = Field(
        None, description="local: GPU indices (nvidia-smi's, or positions in CUDA_VISIBLE_DEVICES when set) or 'all'")
    runs_per_gpu: PositiveInt = Field(1, description=">1 shares each GPU between runs; their GPU energy is then "
                                      "marked shared")
    threads_per_run: PositiveInt | None = Field(
        None, description="torch/OpenMP threads per run; None: 1 for CPU-only runs (scores then do not "
        "depend on jobs), cores ÷ runs at once for runs that may use a GPU")
    ray_address: str | None = Field(None, description="'auto', 'ray://head:10001' or 'head:6379'; None: a local "
                                    "Ray instance")
    max_retries: NonNegativeInt = Field(2, description="ray: resubmissions of a run whose task was lost with its "
                                        "worker or node")
    ray_resources: RayResources = RayResources()

    @field_validator("gpus", mode="before")
    @classmethod
    def _parse_gpus(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return [v]
        if isinstance(v, str) and v.strip().lower() != "all":
            parts = [p.strip() for p in v.split(",") if p.strip()]
            if not parts or not all(p.isdigit() for p in parts):
                raise ValueError(f"{v!r}: expected 'all' or comma-separated GPU indices such as 0,1,2,3")
            return [int(p) for p in parts]
        if isinstance(v, str):
            return "all"
        return v

    @model_validator(mode="after")
    def _coherent(self):
        if isinstance(self.gpus, list):
            dup = sorted({g for g in self.gpus if self.gpus.count(g) > 1})
            if dup:
                raise ValueError(f"gpus: GPU {', '.join(map(str, dup))} listed twice; to put several runs on one "
                                 "GPU use runs_per_gpu (--runs-per-gpu)")
            if not self.gpus:
                raise ValueError("gpus: empty list; leave it out for CPU runs or give indices")
        if self.kind == "local":
            if self.gpus is not None and self.jobs > 1:
                raise ValueError("jobs and gpus do not combine: with gpus, one run per GPU (× runs_per_gpu) runs at "
                                 "once; jobs is for CPU-only runs")
            if self.runs_per_gpu > 1 and self.gpus is None:
                raise ValueError("runs_per_gpu needs gpus (which GPUs to share), e.g. --gpus 0 --runs-per-gpu 2")
        if self.kind == "ray" and self.gpus is not None:
            raise ValueError("gpus applies to the local executor; with Ray each run's task asks for "
                             "ray_resources.num_gpus and Ray picks the GPU")
        if self.kind == "local" and self.ray_address is not None:
            raise ValueError("ray_address needs the ray executor (--executor ray)")
        return self

    @property
    def concurrency_hint(self) -> str:
        if self.kind == "ray":
            return f"ray ({self.ray_address or f'local instance, {self.jobs} CPUs'})"
        if self.gpus is not None:
            per = f", {self.runs_per_gpu} runs per GPU" if self.runs_per_gpu > 1 else ""
            return f"local, GPUs {self.gpus if self.gpus == 'all' else ','.join(map(str, self.gpus))}{per}"
        return f"local, {self.jobs} job{'s' if self.jobs > 1 else ''}"


def resolve_settings(base: ExecutorSettings | dict | None, overrides: dict[str, Any]) -> ExecutorSettings:
    """The suite's ``executor:`` block with command-line overrides (None values ignored) applied on top."""
    data = base.model_dump() if isinstance(base, ExecutorSettings) else dict(base or {})
    over = {k: v for k, v in overrides.items() if v is not None}
    if over.get("kind") == "local" and data.get("kind") == "ray":
        data.pop("ray_address", None)
    if over.get("kind") == "ray" and "gpus" not in over:
        data.pop("gpus", None)
    data.update(over)
    try:
        return ExecutorSettings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            problems.append(f"{where}: {msg}" if where else msg)
        raise ExecutorError("invalid executor settings: " + "; ".join(problems)) from None
