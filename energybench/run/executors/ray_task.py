"""What runs inside Ray workers: the task wrapper, its default body, and the occupancy actor.

Kept free of torch and of the suite schema (standard library, pydantic), so
a fresh worker is ready in about a second: the run's own child process
imports torch, as it would on the local executor.
"""

from __future__ import annotations

import os
import socket
from typing import Callable

from energybench.run.executors.occupancy import Occupancy

TaskFn = Callable[[dict, dict], dict]  # (payload, env for the child) -> row as a JSON-able dict


def run_task(payload: dict, env: dict) -> dict:
    """The default task body: one run in a child process of the Ray worker.

    payload: ``spec_json`` (the RunSpec), ``row_base`` (what a failed row carries), ``tag`` (log prefix).
    """
    from energybench.run.executors.process import run_child

    tag = payload.get("tag", "")
    return run_child(payload["spec_json"], payload["row_base"], lambda line: print(tag + line, flush=True), env=env)


class OccupancyActor:
    """Cluster-wide :class:`Occupancy`; keys are (resource, node id[, GPU id])."""

    def __init__(self) -> None:
        self.occ = Occupancy()
        self.keys: dict[str, list] = {}

    def enter(self, keys: list, who: str) -> None:
        self.keys[who] = keys
        for k in keys:
            self.occ.enter(tuple(k), who)

    def leave(self, who: str) -> list[int]:
        return [self.occ.leave(tuple(k), who) for k in self.keys.pop(who, [])]


def describe_gpus(gpu_ids: list[str]) -> list[dict]:
    """Name and UUID of the task's GPUs from NVML (best effort: None plus a reason)."""
    out = [{"index": int(g) if g.isdigit() else None, "id": g, "uuid": None, "name": None} for g in gpu_ids]
    if not out:
        return out
    try:
        import pynvml as nvml

        nvml.nvmlInit()
        try:
            for d in out:
                h = (nvml.nvmlDeviceGetHandleByIndex(d["index"]) if d["index"] is not None
                     else nvml.nvmlDeviceGetHandleByUUID(d["id"]))
                d["uuid"], d["name"] = str(nvml.nvmlDeviceGetUUID(h)), str(nvml.nvmlDeviceGetName(h))
        finally:
            nvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001
        for d in out:
            d["reason"] = f"NVML: {type(exc).__name__}: {exc}"
    return out


def ray_entry(task_fn: TaskFn, payload: dict, env: dict, occupancy, who: str) -> tuple[dict, dict]:
    """The Ray task: record placement and company, then run ``task_fn``."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    env = dict(env)
    if not gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU was reserved for this run: it must not use one
    keys = [("host", node)] + [("gpu", node, g) for g in gpu_ids]
    ray.get(occupancy.enter.remote(keys, who))
    try:
        row = task_fn(payload, env)
    finally:
        peaks = ray.get(occupancy.leave.remote(who))
    placement = {"host": socket.gethostname(), "node_id": node, "gpu_ids": gpu_ids,
                 "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES")),
                 "gpus": describe_gpus(gpu_ids), "host_peak": peaks[0] if peaks else None,
                 "gpu_peak": max(peaks[1:]) if len(peaks) > 1 else None}
    return row, placement
