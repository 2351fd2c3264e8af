"""Ray executor on a local instance (2 CPUs): same rows as the local executor; lost tasks retried, then failed."""

from __future__ import annotations

import os
import socket

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed; the ray extra adds it: pip install 'energybench[ray]'")

from executor_helpers import comparable, grid, serial_and_jobs2  # noqa: E402,F401

from energybench.results import read_rows  # noqa: E402
from energybench.run.executors import ExecutorSettings  # noqa: E402
from energybench.run.executors.ray_executor import RayExecutor  # noqa: E402
from energybench.run.runner import run_suite  # noqa: E402

quiet = dict(echo=lambda m: None)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module; executors reuse it (and leave it running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.mark.slow  # two real runs on Ray beside the local grid: over a minute on 2 busy cores
def test_ray_runs_the_grid_with_the_same_rows_as_the_local_executor(tmp_path, local_ray, serial_and_jobs2):
    _, local_out, _ = serial_and_jobs2  # the same grid, local executor, --jobs 2, one thread per run
    ray_suite, ray_out = grid(tmp_path, "ray")
    ex = RayExecutor(ExecutorSettings(kind="ray", threads_per_run=1), log_to_driver=False)
    summary = run_suite(ray_suite, executor=ex, **quiet)
    assert (summary.ok, summary.failed, summary.executor) == (2, 0, "ray")
    local = {r["run_id"]: r for r in read_rows(local_out)}
    remote = {r["run_id"]: r for r in read_rows(ray_out)}
    assert local.keys() == remote.keys()
    for rid, row in remote.items():
        assert comparable(row) == comparable(local[rid]), rid
        assert row["executor"] == "ray" and row["host"] == socket.gethostname()
        assert row["executor_detail"]["attempts"] == 1 and row["executor_detail"]["node_id"]
        assert row["environment"]["cuda_visible_devices"] == ""  # no GPU reserved → the child may use none
        assert row["environment"]["torch_num_threads"] == 1
        assert row["gpu_assignment"] is None and row["gpu_shared_with_concurrent_runs"] is False
    assert len({r["host_shared_with_concurrent_runs"] for r in remote.values()}) == 1  # symmetric for two runs


def test_resume_on_ray_skips_runs_finished_by_hash(tmp_path, local_ray):
    suite, out = grid(tmp_path, "resume")
    def task(payload: dict, env: dict) -> dict:
        return {**payload["row_base"], "status": "ok"}  # a run that trained nothing

    first = RayExecutor(ExecutorSettings(kind="ray"), task_fn=task, log_to_driver=False)
    assert run_suite(suite, executor=first, **quiet).ok == 2
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(lines[0] + "\n")  # as if killed after one run
    said = []
    again = RayExecutor(ExecutorSettings(kind="ray"), task_fn=task, log_to_driver=False)
    summary = run_suite(suite, executor=again, echo=said.append)
    assert (summary.skipped, summary.ok) == (1, 1) and "1 of 2 runs already finished" in said[0]
    ids = [r["run_id"] for r in read_rows(out)]
    assert len(ids) == len(set(ids)) == 2


def test_a_task_lost_with_its_worker_is_retried_then_recorded_failed(tmp_path, local_ray):
    suite, out = grid(tmp_path, "lost")

    def dies(payload: dict, env: dict) -> dict:
        os._exit(1)  # the worker process vanishes, as when its node goes down

    ex = RayExecutor(ExecutorSettings(kind="ray", max_retries=1), task_fn=dies, log_to_driver=False)
    summary = run_suite(suite, executor=ex, **quiet)
    assert (summary.ok, summary.failed) == (0, 2)
    for row in read_rows(out):
        assert row["status"] == "failed" and row["executor"] == "ray"
        assert "Ray task lost 2 time(s), giving up (max_retries=1): WorkerCrashedError" in row["error"]
        assert row["executor_detail"]["attempts"] == 2


def test_a_task_lost_once_succeeds_on_its_retry(tmp_path, local_ray):
    suite, out = grid(tmp_path, "flaky")
    marks = tmp_path / "marks"
    marks.mkdir()

    def dies_first_time(payload: dict, env: dict) -> dict:
        mark = marks / payload["row_base"]["run_id"]
        if not mark.exists():
            mark.touch()
            os._exit(1)
        return {**payload["row_base"], "status": "ok"}

    ex = RayExecutor(ExecutorSettings(kind="ray", max_retries=2), task_fn=dies_first_time, log_to_driver=False)
    summary = run_suite(suite, executor=ex, **quiet)
    assert (summary.ok, summary.failed) == (2, 0)
    assert [r["executor_detail"]["attempts"] for r in read_rows(out)] == [2, 2]


def test_a_stop_signal_inside_a_blocking_ray_call_surfaces_as_the_stop_itself():
    """Ray's Cython wait runs our signal handler; the StopRequested it raises comes back wrapped in a SystemError
    ("returned a result with an exception set"). The grid must see the stop (exit 130/143 and the resumable
    message), not a traceback. Shaped as Ray raises it; the end-to-end Ctrl-C was checked by hand (closing note)."""
    import signal

    from energybench.run.executors.ray_executor import _signal_safe
    from energybench.run.stopping import StopRequested

    def ray_like_wait():
        try:
            raise StopRequested(signal.SIGINT)
        except StopRequested as stop:
            raise SystemError("<cyfunction CoreWorker.wait> returned a result with an exception set") from stop

    with pytest.raises(StopRequested) as exc:
        _signal_safe(ray_like_wait)
    assert exc.value.exit_code == 130

    def other_bug():
        raise SystemError("something else")

    with pytest.raises(SystemError, match="something else"):
        _signal_safe(other_bug)
    assert _signal_safe(lambda x: x + 1, 1) == 2
