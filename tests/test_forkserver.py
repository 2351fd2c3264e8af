"""Warm fork server: a forked run computes exactly what a fresh interpreter computes, and only GPU-less runs fork."""

from __future__ import annotations

import pytest
from executor_helpers import FAKE_GPUS, comparable, grid, ok_row

from energybench.results import RunResult
from energybench.run.executors import (
    ExecutorError,
    ExecutorSettings,
    LocalExecutor,
    forkserver,
)
from energybench.run.executors.forkserver import ForkedRun
from energybench.run.executors.process import CHILD_COMMAND, run_in_child
from energybench.run.plan import expand


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    suite, _ = grid(tmp_path_factory.mktemp("fork"), "fork")
    return expand(suite)[0]  # bitfit on tiny-t5, device cpu, 4 steps, trackers off


def _run(spec, command=None, env=None, on_spawn=None):
    spawned = []
    row = run_in_child(spec, lambda line: None, env=env, command=command,
                       on_spawn=lambda p: (spawned.append(p), on_spawn and on_spawn(p)))
    return row, spawned[0]


def test_a_forked_run_computes_exactly_what_a_fresh_interpreter_computes(spec):
    cpu_only = {"CUDA_VISIBLE_DEVICES": "", "ENERGYBENCH_NUM_THREADS": "1"}
    forked, proc = _run(spec, env=cpu_only)
    fresh, fresh_proc = _run(spec, env=cpu_only, command=CHILD_COMMAND)
    assert isinstance(proc, ForkedRun) and not isinstance(fresh_proc, ForkedRun)
    assert forked.status == fresh.status == "ok", (forked.error, fresh.error)
    assert forked.environment["torch_num_threads"] == 1  # the executor's env reached the forked run
    assert comparable(forked.model_dump(mode="json")) == comparable(fresh.model_dump(mode="json"))
    assert forked.accounting["mem_model_bytes"] > 0 and forked.score is not None


def test_a_forked_run_killed_midway_becomes_a_failed_row_that_says_so(spec):
    row, proc = _run(spec, env={"CUDA_VISIBLE_DEVICES": ""}, on_spawn=lambda p: p.kill())
    assert isinstance(proc, ForkedRun) and proc.returncode == -9
    assert row.status == "failed" and "killed by signal 9" in row.error and "before reporting" in row.error
    assert row.oom["peak_rss_bytes"] is None and "fork server" in row.oom["reasons"]["peak_rss_bytes"]


@pytest.mark.parametrize("visible, switch, forks", [
    ("", None, True),       # sees no GPU: forked
    ("0", None, False),     # pinned to a GPU: CUDA must start in a fresh process after the pinning
    (None, None, False),    # may see every GPU
    ("", "0", False),       # ENERGYBENCH_FORKSERVER=0 turns forking off
])
def test_only_runs_that_can_see_no_gpu_are_forked(monkeypatch, visible, switch, forks):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    if switch is None:
        monkeypatch.delenv(forkserver.DISABLE_ENV, raising=False)
    else:
        monkeypatch.setenv(forkserver.DISABLE_ENV, switch)
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert forkserver.wanted(env) is forks


def _child_envs(settings: ExecutorSettings, device: str, lister) -> list[dict]:
    from energybench.suite import parse_suite

    suite = parse_suite("name: f\noutput_dir: /tmp/unused\nbackbones: [{name: tiny-t5}]\ntasks: [{name: synth-sst2}]\n"
                        f"methods: [{{name: bitfit}}]\nseeds: [0]\ndevice: {device}\n")
    envs: list[dict] = []

    def run(spec, relay, env=None, on_spawn=None) -> RunResult:
        envs.append(dict(env))
        return ok_row(spec)

    ex = LocalExecutor(settings, run_fn=run, gpu_lister=lister)
    ex.prepare(suite, 1)
    list(ex.run(expand(suite), _Quiet()))
    return envs


class _Quiet:
    def started(self, spec, where): pass

    def relay(self, spec, line): pass

    def note(self, message): pass


def _no_nvml():
    raise ExecutorError("cannot list GPUs: NVML is not available")


def test_a_serial_run_on_a_machine_without_gpus_is_told_so_and_can_fork():
    assert _child_envs(ExecutorSettings(), "auto", _no_nvml)[0]["CUDA_VISIBLE_DEVICES"] == ""
    assert _child_envs(ExecutorSettings(), "auto", lambda: [])[0]["CUDA_VISIBLE_DEVICES"] == ""
    assert _child_envs(ExecutorSettings(), "cpu", lambda: FAKE_GPUS)[0]["CUDA_VISIBLE_DEVICES"] == ""


def test_a_serial_run_that_may_use_a_gpu_keeps_every_gpu_visible():
    assert "CUDA_VISIBLE_DEVICES" not in _child_envs(ExecutorSettings(), "auto", lambda: FAKE_GPUS)[0]
    assert "CUDA_VISIBLE_DEVICES" not in _child_envs(ExecutorSettings(), "cuda", _no_nvml)[0]


def test_cpu_only_runs_get_one_thread_serially_and_side_by_side_so_scores_do_not_depend_on_jobs():
    threads = lambda envs: {e.get("ENERGYBENCH_NUM_THREADS") for e in envs}  # noqa: E731
    assert threads(_child_envs(ExecutorSettings(), "auto", _no_nvml)) == {"1"}
    assert threads(_child_envs(ExecutorSettings(jobs=2), "auto", _no_nvml)) == {"1"}
    assert threads(_child_envs(ExecutorSettings(jobs=2, threads_per_run=2), "cpu", _no_nvml)) == {"2"}
    assert threads(_child_envs(ExecutorSettings(), "auto", lambda: FAKE_GPUS)) == {None}  # may use a GPU: torch's default


def test_concurrent_starts_leave_the_callers_environment_as_it_was(monkeypatch):
    """start() sets PYTHONSAFEPATH only while it starts the server; two slots' threads starting at once must
    not leave it set (it did: the second thread saved the first's "1" and restored it), which cost every later
    subprocess of the caller its script folder on sys.path."""
    import multiprocessing
    import os
    import threading
    import time

    class SlowProcess:
        def __init__(self, *args, **kwargs):
            pass

        def start(self):
            time.sleep(0.02)  # what starting the server costs, widened: the threads overlap here

    class Ctx:
        Pipe = staticmethod(multiprocessing.Pipe)
        Process = SlowProcess

    monkeypatch.setattr(forkserver, "_ctx", lambda: Ctx)
    monkeypatch.delenv("PYTHONSAFEPATH", raising=False)
    streams = []

    def slot():
        for _ in range(5):
            streams.append(forkserver.start("spec.json", "result.json", {})[1])

    threads = [threading.Thread(target=slot) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in streams:
        s.close()
    assert "PYTHONSAFEPATH" not in os.environ
