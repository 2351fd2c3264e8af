"""Runs on this machine: one child process per run, up to one per listed GPU (or ``jobs`` on CPU) at once.

Each concurrent run has a *slot*: a GPU (pinned through the child's
``CUDA_VISIBLE_DEVICES``) or a CPU share. A worker thread per slot takes the
next pending run and blocks on its child; finished rows go to one queue that
the runner drains and appends, so there is still a single writer.

Threads (``threads_per_run`` overrides): a CPU-only run gets one intra-op
thread, so its numbers are the same serially and with ``--jobs N``; runs that
may use a GPU get cores ÷ runs at once when several run together, and torch's
default when alone.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import threading
import traceback
from typing import Callable, Iterator

from energybench.results import RunResult
from energybench.run.executors import gpus as gpu_inventory
from energybench.run.executors.base import (
    Events,
    Occupancy,
    placed,
    thread_env,
    usable_cores,
)
from energybench.run.executors.forkserver import ForkedRun
from energybench.run.executors.gpus import GpuInfo, select_gpus
from energybench.run.executors.process import failed_row, run_in_child
from energybench.run.executors.settings import ExecutorError, ExecutorSettings
from energybench.run.plan import RunSpec

RunFn = Callable[..., RunResult]  # (spec, relay, env=..., on_spawn=...) -> RunResult
HOST = "host"


class LocalExecutor:
    name = "local"

    def __init__(self, settings: ExecutorSettings | None = None, *, run_fn: RunFn = run_in_child,
                 gpu_lister: Callable[[], list[GpuInfo]] | None = None, cores: int | None = None) -> None:
        """run_fn: executes one run (tests pass a fake); gpu_lister: the GPUs that exist (tests pass a fake list)."""
        self.settings = settings or ExecutorSettings()
        self.run_fn = run_fn
        self.gpu_lister = gpu_lister
        self.cores = cores or usable_cores()
        self.host = socket.gethostname()
        self.slots: list[GpuInfo | None] = [None]
        self.hide_gpus = False
        self._procs: dict[str, subprocess.Popen | ForkedRun] = {}  # slot thread -> its current child
        self._procs_lock = threading.Lock()

    # ------------------------------------------------------------------ setup

    def prepare(self, suite, n_runs: int) -> list[str]:
        s, notes = self.settings, []
        device = getattr(suite, "device", "auto")
        if s.gpus is not None:
            lister = self.gpu_lister or gpu_inventory.list_gpus
            chosen = select_gpus(s.gpus, lister(), where="gpus (--gpus)")
            # GPU-major interleave: the first len(chosen) runs get one GPU each before any GPU gets a second.
            self.slots = [g for _ in range(s.runs_per_gpu) for g in chosen]
            if device == "cpu":
                notes.append("the suite says device: cpu, so the pinned GPUs stay idle (CUDA_VISIBLE_DEVICES is "
                             "still set per run)")
        else:
            self.slots = [None] * s.jobs
            if s.jobs > 1 and device == "cuda":
                raise ExecutorError(f"--jobs {s.jobs} with device: cuda would put {s.jobs} runs on the same GPU; use "
                                    "--gpus all (one run per GPU), or --gpus 0 --runs-per-gpu N to share one on purpose")
            # A run that cannot use a GPU sees none, which also lets it be forked warm (executors/forkserver.py).
            self.hide_gpus = s.jobs > 1 or device == "cpu" or (device == "auto" and not self._machine_has_gpu())
            if s.jobs > 1:
                if device == "auto":
                    notes.append(f"--jobs {s.jobs} runs CPU-only: each run sees no GPU (CUDA_VISIBLE_DEVICES=''); "
                                 "use --gpus to run on GPUs")
        threads = self.threads_per_run
        if threads is not None:
            n = len(self.slots)
            note = f"{n} run{'s' if n > 1 else ''} at once, {threads} thread{'s' if threads > 1 else ''} each"
            if self.hide_gpus and s.threads_per_run is None:
                note += " (CPU runs: one thread each, so scores do not depend on --jobs)"
                if n < self.cores:
                    note += f"; this machine has {self.cores} cores: --jobs {self.cores} runs {self.cores} at once"
            notes.append(note)
        return notes

    def _machine_has_gpu(self) -> bool:
        try:
            return bool((self.gpu_lister or gpu_inventory.list_gpus)())
        except ExecutorError:  # no NVML: no NVIDIA GPU to use
            return False

    @property
    def threads_per_run(self) -> int | None:
        """Intra-op threads of each run.

        CPU-only runs get one thread each, whatever ``--jobs`` says: torch's CPU kernels split
        reductions by thread count, so 2 threads and 1 thread train to different weights, and a
        grid's scores must not depend on how many runs went side by side. Runs that may use a GPU
        share the cores when several run at once (their numerics are the GPU's).
        """
        if self.settings.threads_per_run is not None:
            return self.settings.threads_per_run
        if self.hide_gpus:
            return 1
        return max(1, self.cores // len(self.slots)) if len(self.slots) > 1 else None

    def close(self) -> None:
        self._stop_children()

    # ------------------------------------------------------------------ running

    def run(self, specs: list[RunSpec], events: Events) -> Iterator[tuple[RunSpec, RunResult]]:
        todo: queue.Queue[RunSpec] = queue.Queue()
        for spec in specs:
            todo.put(spec)
        done: queue.Queue[tuple[RunSpec, RunResult]] = queue.Queue()
        stop = threading.Event()
        occupancy = Occupancy()
        workers = [threading.Thread(target=self._worker, args=(slot, todo, done, stop, occupancy, events),
                                    name=f"energybench-slot-{i}", daemon=True)
                   for i, slot in enumerate(self.slots[: len(specs)])]
        for w in workers:
            w.start()
        try:
            for _ in range(len(specs)):
                while True:
                    try:
                        item = done.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
                        break
                    except queue.Empty:
                        if not any(w.is_alive() for w in workers) and done.empty():
                            raise RuntimeError("every executor thread ended with runs still pending") from None
                yield item
        finally:
            stop.set()
            self._stop_children()
            for w in workers:
                w.join(timeout=10)

    def _worker(self, gpu: GpuInfo | None, todo, done, stop, occupancy: Occupancy, events: Events) -> None:
        env = thread_env(self.threads_per_run)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu.cuda_visible_devices
        elif self.hide_gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""
        while not stop.is_set():
            try:
                spec = todo.get_nowait()
            except queue.Empty:
                return
            who = spec.run_id
            occupancy.enter(HOST, who)
            if gpu is not None:
                occupancy.enter(("gpu", gpu.index), who)
            events.started(spec, gpu.label if gpu is not None else None)
            try:
                row = self.run_fn(spec, lambda line, s=spec: events.relay(s, line), env=env, on_spawn=self._track)
            except Exception as exc:  # noqa: BLE001 - an executor bug loses this run, not the grid
                row = failed_row(spec, f"executor error: {type(exc).__name__}: {exc}",
                                 traceback_tail=traceback.format_exc()[-4000:])
            gpu_peak = occupancy.leave(("gpu", gpu.index), who) if gpu is not None else None
            host_peak = occupancy.leave(HOST, who)
            detail = {"slots": len(self.slots), "threads_per_run": self.threads_per_run,
                      "runs_per_gpu": self.settings.runs_per_gpu if gpu is not None else None, "attempts": 1}
            done.put((spec, placed(row, executor=self.name, host=self.host, gpu=gpu.as_row() if gpu else None,
                                   gpu_peak=gpu_peak, host_peak=host_peak, detail=detail)))

    def _track(self, proc: subprocess.Popen | ForkedRun) -> None:
        # Never poll() here: reaping belongs to the slot's own thread, which reads the child's peak RSS then.
        with self._procs_lock:
            self._procs[threading.current_thread().name] = proc

    def _stop_children(self) -> None:
        """Terminate children still running (the grid was abandoned); the runs stay pending for a resume."""
        with self._procs_lock:
            procs, self._procs = list(self._procs.values()), {}
        for p in procs:
            if p.returncode is None:
                try:
                    p.terminate()
                except OSError:
                    pass
