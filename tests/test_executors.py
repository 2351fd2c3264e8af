"""Local executor: concurrency changes where runs execute, never what they compute or how rows are written.

Real child processes run the tiny grid (device: cpu); GPUs are a fake list of
four boards, so pinning is checked through the CUDA_VISIBLE_DEVICES each
child recorded, without a GPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from conftest import write_suite
from executor_helpers import (  # noqa: F401
    FAKE_GPUS,
    FAST_TRAINING,
    GRID2,
    comparable,
    grid,
    ok_row,
    serial_and_jobs2,
)

from energybench import cli
from energybench.results import RunResult, read_rows
from energybench.run.child import annotate_oom
from energybench.run.executors import (
    ExecutorError,
    ExecutorSettings,
    LocalExecutor,
    resolve_settings,
)
from energybench.run.executors import gpus as gpu_inventory
from energybench.run.executors.gpus import list_gpus, select_gpus
from energybench.run.executors.occupancy import Occupancy
from energybench.run.executors.process import run_in_child
from energybench.run.plan import expand
from energybench.run.runner import run_suite
from energybench.suite import load_suite, parse_suite

quiet = dict(echo=lambda m: None)


def _specs(n: int):
    seeds = ", ".join(str(i) for i in range(n))
    suite = parse_suite(f"name: fake\noutput_dir: /tmp/unused\nbackbones: [{{name: tiny-t5}}]\n"
                        f"tasks: [{{name: synth-sst2}}]\nmethods: [{{name: bitfit}}]\nseeds: [{seeds}]\ndevice: cpu\n")
    return suite, expand(suite)


class _Events:
    def started(self, spec, where): pass

    def relay(self, spec, line): pass

    def note(self, message): pass


# ---------------------------------------------------------------- real runs


def test_jobs2_writes_the_same_rows_as_serial_execution(serial_and_jobs2):
    serial_out, jobs_out, summary = serial_and_jobs2
    assert (summary.ok, summary.failed) == (2, 0)
    serial = {r["run_id"]: r for r in read_rows(serial_out)}
    jobs = {r["run_id"]: r for r in read_rows(jobs_out)}
    assert serial.keys() == jobs.keys() and len(serial) == 2
    for rid in serial:
        assert comparable(jobs[rid]) == comparable(serial[rid]), rid
        assert jobs[rid]["score"] is not None and jobs[rid]["accounting"]["mem_model_bytes"] > 0


def test_jobs2_rows_are_whole_lines_one_per_run(serial_and_jobs2):
    _, jobs_out, _ = serial_and_jobs2
    raw = (jobs_out / "results.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.decode().splitlines()
    rows = [json.loads(l) for l in lines]  # a torn or interleaved line would not parse
    assert len(rows) == len({r["run_id"] for r in rows}) == 2


def test_jobs2_children_get_a_share_of_the_cores_and_no_gpu(serial_and_jobs2):
    _, jobs_out, _ = serial_and_jobs2
    for r in read_rows(jobs_out):
        assert r["executor"] == "local" and r["host"]
        assert r["environment"]["torch_num_threads"] == 1  # the child applied ENERGYBENCH_NUM_THREADS
        assert r["environment"]["cuda_visible_devices"] == ""  # --jobs is CPU-only
        assert r["gpu_assignment"] is None and r["gpu_shared_with_concurrent_runs"] is False
        assert r["executor_detail"]["slots"] == 2


def test_overlapping_cpu_runs_are_marked_host_shared_symmetrically(serial_and_jobs2):
    serial_out, jobs_out, _ = serial_and_jobs2
    jobs = read_rows(jobs_out)
    # two runs, two slots: both start at once and each trains for seconds, so both overlapped
    assert [r["host_shared_with_concurrent_runs"] for r in jobs] == [True, True]
    assert [r["executor_detail"]["max_runs_on_host_at_once"] for r in jobs] == [2, 2]
    for r in jobs:
        assert r["host_shared_with_concurrent_runs"] == (r["executor_detail"]["max_runs_on_host_at_once"] == 2)
        assert any(w.startswith("host figures are shared") for w in r["warnings"]) == r["host_shared_with_concurrent_runs"]
    assert not any(r["host_shared_with_concurrent_runs"] for r in read_rows(serial_out))


def test_cpu_runs_side_by_side_are_host_shared_and_runs_one_after_another_are_not():
    """Deterministic twin of the test above: a barrier makes the two fake runs overlap for sure."""
    suite, specs = _specs(2)
    together = threading.Barrier(2, timeout=30)

    def overlapping(spec, relay, env=None, on_spawn=None):
        together.wait()
        return ok_row(spec)

    ex = LocalExecutor(ExecutorSettings(jobs=2), run_fn=overlapping)
    ex.prepare(suite, 2)
    rows = [row for _, row in ex.run(specs, _Events())]
    assert [r.host_shared_with_concurrent_runs for r in rows] == [True, True]
    assert all(r.executor_detail["max_runs_on_host_at_once"] == 2 for r in rows)
    assert all(any("host figures are shared: 2 runs" in w for w in r.warnings) for r in rows)
    serial = LocalExecutor(ExecutorSettings(), run_fn=lambda spec, relay, **kw: ok_row(spec))
    serial.prepare(suite, 2)
    rows = [row for _, row in serial.run(specs, _Events())]
    assert [r.host_shared_with_concurrent_runs for r in rows] == [False, False]
    assert not any(r.warnings for r in rows)


@pytest.mark.slow  # two real runs in children: ~100 s on 2 busy cores
def test_gpus_pin_each_child_to_one_board_by_uuid(tmp_path):
    suite, out = grid(tmp_path, "pinned")
    ex = LocalExecutor(ExecutorSettings(gpus=[3, 1], threads_per_run=1), gpu_lister=lambda: FAKE_GPUS)
    summary = run_suite(suite, executor=ex, **quiet)
    assert summary.ok == 2
    rows = read_rows(out)
    seen = sorted(r["environment"]["cuda_visible_devices"] for r in rows)  # as the child itself recorded it
    assert seen == ["GPU-fake-1", "GPU-fake-3"]
    for r in rows:
        g = r["gpu_assignment"]
        assert g["cuda_visible_devices"] == r["environment"]["cuda_visible_devices"] == f"GPU-fake-{g['index']}"
        assert g["uuid"] == f"GPU-fake-{g['index']}" and g["name"] == "Fake Board 80GB"
        assert r["gpu_shared_with_concurrent_runs"] is False


@pytest.mark.slow  # four real runs, killed and resumed: ~90 s
def test_parent_killed_mid_grid_with_jobs2_takes_its_children_and_resumes_without_duplicates(tmp_path):
    out = tmp_path / "out"
    path = write_suite(tmp_path, GRID2.format(out=out).replace("synth-sst2}]", "synth-sst2}]\n    seeds: [0, 1]"),
                       training=FAST_TRAINING)
    env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}
    proc = subprocess.Popen([sys.executable, "-m", "energybench.cli", "run", str(path), "--jobs", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results, kids = out / "results.jsonl", []
    deadline = time.time() + 240
    while time.time() < deadline:
        kids = psutil.Process(proc.pid).children()
        if results.exists() and results.read_bytes().count(b"\n") >= 1 and kids:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # the parent alone: its children must not train on as orphans
    proc.wait()
    _, alive = psutil.wait_procs(kids, timeout=20)
    assert kids and not alive, f"children outlived their parent: {alive}"
    before = read_rows(out)
    assert 1 <= len(before) < 4, "the kill should land mid-grid"
    said = []
    summary = run_suite(load_suite(path), settings=ExecutorSettings(jobs=2), echo=said.append)
    assert (summary.skipped, summary.ok, summary.failed) == (len(before), 4 - len(before), 0)
    assert f"{len(before)} of 4 runs already finished" in said[0]
    after = read_rows(out)
    assert after[: len(before)] == before, "finished rows were rewritten"
    ids = [r["run_id"] for r in after]
    assert len(ids) == len(set(ids)) == 4 and all(r["status"] == "ok" for r in after)


# ---------------------------------------------------------------- placement with fake runs


def test_at_most_one_run_per_gpu_and_one_per_listed_gpu_at_once():
    suite, specs = _specs(8)
    lock, active, peak, calls = threading.Lock(), {}, {}, []
    barrier = threading.Barrier(4, timeout=30)  # the first four must run together, or this times out

    def run(spec, relay, env=None, on_spawn=None):
        cvd = env["CUDA_VISIBLE_DEVICES"]
        with lock:
            calls.append(cvd)
            first_four = len(calls) <= 4
            active[cvd] = active.get(cvd, 0) + 1
            peak[cvd] = max(peak.get(cvd, 0), active[cvd])
        if first_four:
            barrier.wait()
        time.sleep(0.05)
        with lock:
            active[cvd] -= 1
        return ok_row(spec, environment={"cuda_visible_devices": cvd})

    ex = LocalExecutor(ExecutorSettings(gpus="all"), run_fn=run, gpu_lister=lambda: FAKE_GPUS, cores=8)
    ex.prepare(suite, len(specs))
    rows = [row for _, row in ex.run(specs, _Events())]
    assert sorted(set(calls[:4])) == [f"GPU-fake-{i}" for i in range(4)]
    assert peak == {f"GPU-fake-{i}": 1 for i in range(4)}
    assert len(rows) == 8 and not any(r.gpu_shared_with_concurrent_runs for r in rows)
    assert all(r.gpu_assignment["cuda_visible_devices"] == r.environment["cuda_visible_devices"] for r in rows)
    assert {r.executor_detail["threads_per_run"] for r in rows} == {2}  # 8 cores ÷ 4 runs at once


def test_runs_sharing_a_gpu_on_request_are_marked_shared_with_a_warning():
    suite, specs = _specs(2)
    together = threading.Barrier(2, timeout=30)

    def run(spec, relay, env=None, on_spawn=None):
        together.wait()  # both on GPU 2 at the same moment
        return ok_row(spec)

    ex = LocalExecutor(ExecutorSettings(gpus=[2], runs_per_gpu=2), run_fn=run, gpu_lister=lambda: FAKE_GPUS)
    ex.prepare(suite, 2)
    rows = [row for _, row in ex.run(specs, _Events())]
    for r in rows:
        assert r.gpu_shared_with_concurrent_runs is True and r.gpu_assignment["index"] == 2
        assert any("GPU figures are shared: 2 runs were on GPU 2" in w and "not its own" in w for w in r.warnings)


def test_a_run_alone_on_a_shareable_gpu_is_not_marked_shared():
    suite, specs = _specs(1)
    ex = LocalExecutor(ExecutorSettings(gpus=[0], runs_per_gpu=2), run_fn=lambda spec, relay, **kw: ok_row(spec),
                       gpu_lister=lambda: FAKE_GPUS)
    ex.prepare(suite, 1)
    (_, row), = list(ex.run(specs, _Events()))
    assert row.gpu_shared_with_concurrent_runs is False and row.executor_detail["max_runs_on_gpu_at_once"] == 1
    assert not row.warnings


def test_occupancy_counts_the_most_runs_present_at_once_during_each_stay():
    occ = Occupancy()
    occ.enter("g", "a")
    occ.enter("g", "b")
    occ.enter("g", "c")
    assert occ.leave("g", "b") == 3
    occ.enter("g", "d")  # a, c, d
    assert occ.leave("g", "a") == 3 and occ.leave("g", "c") == 3 and occ.leave("g", "d") == 3
    occ.enter("g", "e")
    assert occ.leave("g", "e") == 1


# ---------------------------------------------------------------- GPU inventory


class _FakeNvml:
    def __init__(self, boards, fail=None):
        self.boards, self.fail = boards, fail

    def nvmlInit(self):
        if self.fail:
            raise self.fail

    def nvmlShutdown(self): pass

    def nvmlDeviceGetCount(self):
        return len(self.boards)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUUID(self, h):
        return self.boards[h][0]

    def nvmlDeviceGetName(self, h):
        return self.boards[h][1]


NVML4 = _FakeNvml([("GPU-aaa0", "A100"), ("GPU-bbb1", "A100"), ("GPU-ccc2", "H100"), ("GPU-ddd3", "H100")])


def test_gpus_are_listed_by_nvml_index_and_pinned_by_uuid():
    gpus = list_gpus(env={}, nvml=NVML4)
    assert [(g.index, g.cuda_visible_devices, g.name) for g in gpus] == [
        (0, "GPU-aaa0", "A100"), (1, "GPU-bbb1", "A100"), (2, "GPU-ccc2", "H100"), (3, "GPU-ddd3", "H100")]


def test_under_cuda_visible_devices_indices_are_positions_in_it():
    gpus = list_gpus(env={"CUDA_VISIBLE_DEVICES": "3,GPU-bbb"}, nvml=NVML4)
    assert [(g.index, g.cuda_visible_devices, g.uuid) for g in gpus] == [(0, "3", "GPU-ddd3"), (1, "GPU-bbb", "GPU-bbb1")]


def test_without_nvml_listing_gpus_is_a_clear_error():
    class NVMLError_LibraryNotFound(Exception):
        pass

    with pytest.raises(ExecutorError, match="NVML is not available .*NVMLError_LibraryNotFound.*leave --gpus out"):
        list_gpus(env={}, nvml=_FakeNvml([], fail=NVMLError_LibraryNotFound("NVML Shared Library Not Found")))


def test_asking_for_missing_or_too_many_gpus_names_what_exists():
    with pytest.raises(ExecutorError, match=r"GPU 5 does not exist; this machine has 4: GPU 0 \(Fake Board"):
        select_gpus([0, 5], FAKE_GPUS)
    with pytest.raises(ExecutorError, match="asks for 6 GPUs but this machine has 4"):
        select_gpus([0, 1, 2, 3, 4, 5], FAKE_GPUS)
    with pytest.raises(ExecutorError, match="no GPU is visible"):
        select_gpus("all", [])


@pytest.mark.parametrize("overrides, message", [
    (dict(gpus="0,0"), "GPU 0 listed twice"),
    (dict(gpus="0,x"), "comma-separated GPU indices"),
    (dict(gpus="0", jobs=2), "jobs and gpus do not combine"),
    (dict(runs_per_gpu=2), "runs_per_gpu needs gpus"),
    (dict(kind="ray", gpus="all"), "Ray picks the GPU"),
    (dict(ray_address="auto"), "needs the ray executor"),
    (dict(jobs=0), "jobs: Input should be greater than 0"),
])
def test_incoherent_executor_settings_are_refused(overrides, message):
    with pytest.raises(ExecutorError, match=message):
        resolve_settings(None, overrides)


def test_command_line_overrides_the_suite_block():
    base = ExecutorSettings(kind="ray", ray_address="auto", max_retries=5)
    s = resolve_settings(base, dict(kind="local", gpus="1,2", jobs=None))
    assert (s.kind, s.gpus, s.ray_address, s.max_retries) == ("local", [1, 2], None, 5)


# ---------------------------------------------------------------- resource errors before any run (exit 2)


def _cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main(["run", *argv])
    return code, capsys.readouterr().err


def test_a_gpu_that_does_not_exist_stops_the_command_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_inventory, "list_gpus", lambda: FAKE_GPUS)
    path = write_suite(tmp_path, GRID2.format(out=tmp_path / "out"))
    code, err = _cli(capsys, str(path), "--gpus", "0,7")
    assert code == 2 and "GPU 7 does not exist; this machine has 4" in err and "no run was started" in err
    code, err = _cli(capsys, str(path), "--gpus", "0,1,2,3,4,5,6,7")
    assert code == 2 and "asks for 8 GPUs but this machine has 4" in err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_gpus_without_nvml_stop_the_command_before_any_run(tmp_path, monkeypatch, capsys):
    def no_nvml(nvml=None):
        raise OSError("NVML Shared Library Not Found")

    monkeypatch.setattr(gpu_inventory, "_nvml_boards", no_nvml)
    path = write_suite(tmp_path, GRID2.format(out=tmp_path / "out"))
    code, err = _cli(capsys, str(path), "--gpus", "all")
    assert code == 2 and "cannot list GPUs: NVML is not available" in err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_jobs_on_a_cuda_suite_is_refused_rather_than_stacking_runs_on_one_gpu(tmp_path, capsys):
    path = write_suite(tmp_path, GRID2.format(out=tmp_path / "out").replace("device: cpu", "device: cuda"))
    code, err = _cli(capsys, str(path), "--jobs", "2")
    assert code == 2 and "--jobs 2 with device: cuda would put 2 runs on the same GPU" in err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_ray_executor_without_ray_installed_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    path = write_suite(tmp_path, GRID2.format(out=tmp_path / "out"))
    code, err = _cli(capsys, str(path), "--executor", "ray")
    assert code == 2 and "pip install 'energybench[ray]'" in err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_unreachable_ray_address_fails_fast_before_any_run(tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'energybench[ray]')")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_suite(tmp_path, GRID2.format(out=tmp_path / "out"))
    t0 = time.perf_counter()
    code, err = _cli(capsys, str(path), "--executor", "ray", "--ray-address", f"ray://127.0.0.1:{port}")
    assert code == 2 and f"cannot reach the Ray cluster at ray://127.0.0.1:{port}" in err
    assert time.perf_counter() - t0 < 120  # fails fast rather than waiting out Ray's connection retries
    assert not (tmp_path / "out" / "results.jsonl").exists()


# ---------------------------------------------------------------- out of memory


OOM_CHILD = """
import sys
hog = bytearray(200 * 2**20)
hog[::4096] = b"x" * len(hog[::4096])   # touch every page so it is resident
print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB", flush=True)
sys.exit(1)
"""
KILLED_CHILD = """
import os, signal
hog = bytearray(120 * 2**20)
hog[::4096] = b"x" * len(hog[::4096])
os.kill(os.getpid(), signal.SIGKILL)   # what the kernel's OOM killer does
"""


def test_child_dying_of_out_of_memory_is_recorded_with_its_peak_and_the_grid_goes_on(tmp_path):
    suite, specs = _specs(3)
    doomed = specs[1].run_id

    def run(spec, relay, env=None, on_spawn=None):
        if spec.run_id == doomed:
            return run_in_child(spec, relay, env, command=[sys.executable, "-c", OOM_CHILD])
        return ok_row(spec)

    summary = run_suite(suite, tmp_path, executor=LocalExecutor(ExecutorSettings(), run_fn=run), **quiet)
    assert (summary.ok, summary.failed) == (2, 1)
    rows = {r["run_id"]: r for r in read_rows(tmp_path)}
    bad = rows[doomed]
    assert bad["status"] == "failed" and "out of memory" in bad["error"]
    assert "CUDA out of memory" in bad["traceback_tail"]
    assert bad["oom"]["peak_rss_bytes"] >= 200 * 2**20  # the 200 MiB it held, as the kernel counted it


def test_child_killed_like_the_oom_killer_is_recorded_with_its_peak(tmp_path):
    _, specs = _specs(1)
    row = run_in_child(specs[0], lambda line: None, command=[sys.executable, "-c", KILLED_CHILD])
    assert row.status == "failed" and "killed by signal 9" in row.error and "out of memory?" in row.error
    assert row.oom["peak_rss_bytes"] >= 120 * 2**20


def test_a_cuda_oom_caught_in_the_child_says_out_of_memory_first_and_keeps_the_peaks():
    row = RunResult(run_id="r", suite="s", backbone="b", task="t", method="m", method_name="m", seed=0, config={},
                    status="failed", error="OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    out = annotate_oom(row)
    assert out.error.startswith("out of memory: OutOfMemoryError: CUDA out of memory")
    assert out.oom["peak_rss_bytes"] > 0
    # This test process used no CUDA, so the GPU peak is null with a reason, never a zero.
    assert out.oom["peak_gpu_mem_bytes"] is None and out.oom["reasons"]["peak_gpu_mem_bytes"]
    assert annotate_oom(row.model_copy(update={"error": "ValueError: bad"})).model_extra.get("oom") is None
