"""Runs as Ray tasks: on an existing cluster (``ray_address``) or a local instance, results streamed to the driver.

Ray is an existing distributed engine (DESIGN.md, "Scale"): it places each run
where its resources are free (``num_gpus=1`` by default when the suite may use
CUDA), sets the task's ``CUDA_VISIBLE_DEVICES``, and reports lost workers and
nodes. Inside the task the run still executes in its own child process
(:func:`~energybench.run.executors.process.run_child`), so isolation is the same
as on one machine, and the worker itself never imports torch.

Retries are the driver's, not Ray's (``max_retries=0`` on the task): a task
lost with its worker or node is resubmitted up to ``max_retries`` times, each
attempt counted in the row, and then recorded as failed with the reason. A run
that fails inside its child is an ordinary failed row and is not retried here
(a later ``energybench run`` retries it, as with the local executor).

Sharing is tracked by a small actor that every task tells when it starts and
ends on a node and GPU, so rows get the same ``*_shared_with_concurrent_runs``
flags as local ones.
"""

from __future__ import annotations

import logging
import socket
import traceback
from typing import Any, Iterator

from energybench.results import RunResult
from energybench.run.executors.base import Events, placed, thread_env
from energybench.run.executors.process import failed_row, row_base
from energybench.run.executors.ray_task import (
    OccupancyActor,
    TaskFn,
    ray_entry,
    run_task,
)
from energybench.run.executors.settings import (
    RAY_INSTALL,
    ExecutorError,
    ExecutorSettings,
)
from energybench.run.plan import RunSpec

CONNECT_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's own retries, when nothing listens at ``address``."""
    hostport = address.removeprefix("ray://").split("/")[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--ray-address {address!r}: expected 'auto', 'ray://HOST:PORT' (Ray Client, usually "
                            "port 10001) or 'HOST:PORT' (the head's GCS, usually 6379)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ExecutorError(f"cannot reach the Ray cluster at {address} ({exc}); is it up? On the head node "
                            "`ray status` says") from None


def _signal_safe(call, *args, **kwargs):
    """``call`` (ray.wait / ray.get), re-raising the grid's own stop request as itself.

    Ray's Cython calls run Python's signal handlers while they block; when our
    SIGINT/SIGTERM handler raises StopRequested there, Ray returns with that
    exception set and Python reports a SystemError around it — a traceback and
    exit 1 instead of "stopped: N of M runs saved" and 130/143.
    """
    from energybench.run.stopping import StopRequested

    try:
        return call(*args, **kwargs)
    except SystemError as exc:
        stop = exc.__cause__ or exc.__context__
        if isinstance(stop, StopRequested):
            raise stop from None
        raise


class RayExecutor:
    name = "ray"

    def __init__(self, settings: ExecutorSettings, *, task_fn: TaskFn = run_task, log_to_driver: bool = True) -> None:
        """task_fn: the body each task runs, ``(payload, env) -> row dict`` (tests pass one that crashes its worker)."""
        self.settings = settings
        self.task_fn = task_fn
        self.log_to_driver = log_to_driver
        self._owns = False
        self._ray = None
        self._occupancy = None
        self._remote = None
        self.num_cpus = settings.ray_resources.num_cpus
        self.num_gpus = 0.0
        self.address = settings.ray_address or "local instance"

    def prepare(self, suite, n_runs: int) -> list[str]:
        try:
            import ray
        except ImportError:
            raise ExecutorError(f"--executor ray needs Ray, which is not installed here: {RAY_INSTALL}") from None
        self._ray, s, notes = ray, self.settings, []
        addr = s.ray_address
        if addr not in (None, "auto", "local"):
            _check_reachable(addr)
        if ray.is_initialized():
            notes.append("using the Ray instance this process already joined")
        else:
            kwargs: dict[str, Any] = dict(log_to_driver=self.log_to_driver, logging_level=logging.WARNING)
            if addr in (None, "local"):
                kwargs.update(num_cpus=s.jobs, include_dashboard=False)
            try:
                ray.init(address=addr or "local", **kwargs)
            except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ... all mean "cannot start"
                raise ExecutorError(f"cannot connect to Ray at {addr or 'a new local instance'!r}: "
                                    f"{type(exc).__name__}: {exc}. Start the cluster first (`ray start --head` on "
                                    "the head node) or check --ray-address") from None
            self._owns = True
        try:
            notes += self._plan_resources(suite)
        except ExecutorError:
            self.close()
            raise
        self._occupancy = ray.remote(OccupancyActor).options(num_cpus=0).remote()
        self._remote = ray.remote(ray_entry).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)
        return notes

    def _plan_resources(self, suite) -> list[str]:
        ray, s = self._ray, self.settings
        device = getattr(suite, "device", "auto")
        total = ray.cluster_resources()
        cluster_gpus = total.get("GPU", 0.0)
        if s.ray_resources.num_gpus is not None:
            self.num_gpus = s.ray_resources.num_gpus
        elif device != "cpu" and cluster_gpus > 0:
            self.num_gpus = 1.0 / s.runs_per_gpu
        if device == "cuda" and self.num_gpus == 0:
            raise ExecutorError("the suite says device: cuda but its Ray tasks would get no GPU (the cluster has "
                                f"{cluster_gpus:g} GPUs, ray_resources.num_gpus={s.ray_resources.num_gpus})")
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(n.get("CPU", 0) >= self.num_cpus and n.get("GPU", 0) >= self.num_gpus for n in nodes):
            raise ExecutorError(f"no node of the Ray cluster has {self.num_cpus:g} CPUs and {self.num_gpus:g} GPUs "
                                f"free for one run (cluster: {total.get('CPU', 0):g} CPUs, {cluster_gpus:g} GPUs); "
                                "lower ray_resources or add nodes")
        slots = int(total.get("CPU", 0) // self.num_cpus)
        if self.num_gpus:
            slots = min(slots, int(cluster_gpus // self.num_gpus))
        return [f"Ray: {total.get('CPU', 0):g} CPUs, {cluster_gpus:g} GPUs in {len(nodes)} node(s); each run asks "
                f"for {self.num_cpus:g} CPU, {self.num_gpus:g} GPU → up to {slots} at once"]

    @property
    def threads_per_run(self) -> int:
        return self.settings.threads_per_run or max(1, int(self.num_cpus))

    def run(self, specs: list[RunSpec], events: Events) -> Iterator[tuple[RunSpec, RunResult]]:
        ray = self._ray
        from ray.exceptions import (
            LocalRayletDiedError,
            NodeDiedError,
            ObjectLostError,
            OutOfMemoryError,
            RayError,
            RaySystemError,
            RayTaskError,
            WorkerCrashedError,
        )

        lost = (WorkerCrashedError, NodeDiedError, LocalRayletDiedError, ObjectLostError, OutOfMemoryError,
                RaySystemError)
        env = thread_env(self.threads_per_run)
        pending: dict[Any, tuple[RunSpec, int, str]] = {}

        def submit(spec: RunSpec, attempt: int) -> None:
            who = f"{spec.run_id}#{attempt}"
            payload = {"spec_json": spec.model_dump_json(), "row_base": row_base(spec), "tag": f"[{spec.run_id[:8]}]"}
            ref = self._remote.remote(self.task_fn, payload, env, self._occupancy, who)
            pending[ref] = (spec, attempt, who)

        for spec in specs:
            submit(spec, 1)
            events.started(spec, "queued on Ray")
        try:
            while pending:
                ready, _ = _signal_safe(ray.wait, list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    spec, attempt, who = pending.pop(ref)
                    place = None
                    try:
                        row_dict, place = _signal_safe(ray.get, ref)
                        row = RunResult.model_validate(row_dict)
                    except RayTaskError as exc:  # the task body raised: a bug, not a lost node; not retried
                        row = failed_row(spec, f"the Ray task raised {exc.cause!r}" if exc.cause else str(exc),
                                         traceback_tail=str(exc)[-4000:])
                    except lost as exc:
                        self._occupancy.leave.remote(who)
                        if attempt <= self.settings.max_retries:
                            events.note(f"  {spec.title}: Ray task lost ({type(exc).__name__}); retrying "
                                        f"(attempt {attempt + 1} of {self.settings.max_retries + 1})")
                            submit(spec, attempt + 1)
                            continue
                        oom = "out of memory: " if isinstance(exc, OutOfMemoryError) else ""
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        row = failed_row(spec, f"{oom}Ray task lost {attempt} time(s), giving up (max_retries="
                                         f"{self.settings.max_retries}): {type(exc).__name__}: {first}",
                                         traceback_tail=str(exc)[-4000:])
                    except RayError as exc:
                        row = failed_row(spec, f"Ray could not run the task: {type(exc).__name__}: {exc}",
                                         traceback_tail=traceback.format_exc()[-4000:])
                    yield spec, self._placed(row, place, attempt)
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001
                    pass

    def _placed(self, row: RunResult, place: dict | None, attempt: int) -> RunResult:
        place = place or {}
        gpus = place.get("gpus") or []
        gpu = None
        if len(gpus) == 1:
            gpu = {**gpus[0], "cuda_visible_devices": place.get("cuda_visible_devices")}
        elif gpus:
            gpu = {"devices": gpus, "cuda_visible_devices": place.get("cuda_visible_devices")}
        detail = {"attempts": attempt, "node_id": place.get("node_id"), "ray_address": self.settings.ray_address,
                  "num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "threads_per_run": self.threads_per_run}
        return placed(row, executor=self.name, host=place.get("host"), gpu=gpu, gpu_peak=place.get("gpu_peak"),
                      host_peak=place.get("host_peak"), detail=detail)

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        if self._occupancy is not None:
            try:
                ray.kill(self._occupancy)
            except Exception:  # noqa: BLE001
                pass
            self._occupancy = None
        if self._owns and ray.is_initialized():
            ray.shutdown()
        self._owns = False
