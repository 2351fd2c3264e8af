"""Shared by tests/test_executors*.py: tiny grids, fake GPUs, fake runs, and rows compared modulo placement."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_TRAINING, write_suite

from energybench.results import RunResult
from energybench.run.executors import ExecutorSettings
from energybench.run.executors.gpus import GpuInfo
from energybench.run.plan import RunSpec
from energybench.run.runner import run_suite
from energybench.suite import load_suite

# Two real runs, small enough for 2 CPU cores; device cpu so a fake GPU list pins nothing real.
GRID2 = """
    name: grid2
    output_dir: {out}
    backbones: [{{name: tiny-t5}}]
    tasks: [{{name: synth-sst2}}]
    methods: [{{name: bitfit}}, {{name: lora, r: 4}}]
    device: cpu
"""

# Energy trackers off: they cost ~15 s a run here and these tests are about placement, not measurement.
FAST_TRAINING = TINY_TRAINING + "  host_energy: false\n  gpu_energy: false\n"

FAKE_GPUS = [GpuInfo(i, f"GPU-fake-{i}", f"GPU-fake-{i}", "Fake Board 80GB") for i in range(4)]

# Fields that say where and when a row ran, not what the run computed.
PLACEMENT = {"started_at", "finished_at", "windows", "executor", "executor_detail", "host", "gpu_assignment",
             "gpu_shared_with_concurrent_runs", "host_shared_with_concurrent_runs"}
PLACEMENT_ENV = {"cuda_visible_devices", "torch_num_threads", "host"}
SHARING_WARNINGS = ("host figures are shared", "GPU figures are shared")


def comparable(row: dict) -> dict:
    """A row without its timings and placement: what must not depend on the executor."""
    out = {k: v for k, v in row.items() if k not in PLACEMENT}
    out["environment"] = {k: v for k, v in row.get("environment", {}).items() if k not in PLACEMENT_ENV}
    out["warnings"] = [w for w in row.get("warnings", []) if not w.startswith(SHARING_WARNINGS)]
    # a learning curve's points carry cumulative time and energy (timings); what was learnt must match
    out["curve"] = [{k: p.get(k) for k in ("step", "examples", "val_score")} for p in row.get("curve") or []]
    return out


def ok_row(spec: RunSpec, **extra) -> RunResult:
    """What a run that trained nothing would report (for fake run functions)."""
    return RunResult(run_id=spec.run_id, suite=spec.suite, backbone=spec.backbone.display, task=spec.task.name,
                     method=spec.method.display, method_name=spec.method.name, seed=spec.seed, config=spec.config(),
                     status="ok", **extra)


def grid(tmp_path: Path, name: str, body: str = GRID2):
    """GRID2 (or ``body``) as a loaded suite writing to tmp_path/name, and that output directory."""
    out = tmp_path / name
    return load_suite(write_suite(tmp_path, body.format(out=out), name=f"{name}.yaml", training=FAST_TRAINING)), out


_LOCAL_GRIDS: dict = {}


@pytest.fixture(scope="session")
def serial_and_jobs2(tmp_path_factory):
    """GRID2 run serially and with --jobs 2, one thread per run in both (so rows are bitwise-comparable).

    Computed once per session (the module cache): the local tests and the Ray test compare against the
    same two directories, although each test module registers this fixture itself.
    """
    if not _LOCAL_GRIDS:
        tmp = tmp_path_factory.mktemp("jobs")
        serial_suite, serial_out = grid(tmp, "serial")
        jobs_suite, jobs_out = grid(tmp, "jobs2")
        run_suite(serial_suite, settings=ExecutorSettings(threads_per_run=1), echo=lambda m: None)
        summary = run_suite(jobs_suite, settings=ExecutorSettings(jobs=2, threads_per_run=1), echo=lambda m: None)
        _LOCAL_GRIDS["value"] = (serial_out, jobs_out, summary)
    return _LOCAL_GRIDS["value"]
