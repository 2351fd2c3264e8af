"""Which GPUs this machine offers the local executor, and what ``--gpus`` picks from them.

The parent lists GPUs through NVML only: it must not create a CUDA context of
its own, which would sit on a GPU and appear in every child's NVML process
list. Indices are nvidia-smi's (NVML, PCI order); when the parent already runs
under ``CUDA_VISIBLE_DEVICES`` they are positions in that list, as in CUDA.

Each child gets the chosen board's UUID as its ``CUDA_VISIBLE_DEVICES``: CUDA
then shows it that board alone, whatever ``CUDA_DEVICE_ORDER`` says, and the
child's NVML sampler finds the same board by UUID
(:mod:`energybench.measure.devices`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Literal, Mapping

from energybench.measure.devices import normalize_uuid, parse_visible_devices
from energybench.run.executors.settings import ExecutorError


@dataclass(frozen=True)
class GpuInfo:
    """One GPU a run can be pinned to.

    index: the number ``--gpus`` uses for it.
    cuda_visible_devices: the value a child pinned to it gets (a UUID where known).
    uuid: NVML's ``GPU-…`` UUID, None if unknown; name: the board's name, None if unknown.
    """

    index: int
    cuda_visible_devices: str
    uuid: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.name or 'unknown board'}, {self.uuid or 'uuid unknown'})"

    def as_row(self) -> dict:
        return {"index": self.index, "uuid": self.uuid, "name": self.name,
                "cuda_visible_devices": self.cuda_visible_devices}


GpuLister = Callable[[], "list[GpuInfo]"]


def _nvml_boards(nvml=None) -> list[tuple[int, str, str]]:
    """(NVML index, UUID, name) of every board; raises if NVML is unusable."""
    if nvml is None:
        import pynvml as nvml  # nvidia-ml-py
    nvml.nvmlInit()
    try:
        out = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            uuid, name = nvml.nvmlDeviceGetUUID(h), nvml.nvmlDeviceGetName(h)
            out.append((i, uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                        name.decode() if isinstance(name, bytes) else str(name)))
        return out
    finally:
        nvml.nvmlShutdown()


def list_gpus(env: Mapping[str, str] | None = None, nvml=None) -> list[GpuInfo]:
    """The GPUs runs may be pinned to; raises :class:`ExecutorError` saying why none can be listed."""
    env = os.environ if env is None else env
    try:
        boards = _nvml_boards(nvml)
    except Exception as exc:  # noqa: BLE001 - NVML missing (no driver) or broken: say so
        raise ExecutorError(f"cannot list GPUs: NVML is not available ({type(exc).__name__}: {exc}). "
                            "On a machine without NVIDIA GPUs leave --gpus out (use --jobs N for CPU runs); "
                            "`energybench doctor` shows what the GPU stack reports") from None
    visible = parse_visible_devices(env.get("CUDA_VISIBLE_DEVICES"))
    if visible is None:
        return [GpuInfo(i, uuid, uuid, name) for i, uuid, name in boards]
    out = []
    for pos, token in enumerate(visible):
        if token.isdigit():
            hit = next((b for b in boards if b[0] == int(token)), None)
        else:
            want = normalize_uuid(token.split("/")[0])
            hits = [b for b in boards if normalize_uuid(b[1]).startswith(want)]
            hit = hits[0] if len(hits) == 1 else None
        out.append(GpuInfo(pos, token, hit[1] if hit else None, hit[2] if hit else None))
    return out


def select_gpus(request: Literal["all"] | list[int], available: list[GpuInfo], where: str = "--gpus") -> list[GpuInfo]:
    """The GPUs ``request`` names; :class:`ExecutorError` naming what exists when it names more or others."""
    inventory = "; ".join(g.label for g in available) or "none"
    if request == "all":
        if not available:
            raise ExecutorError(f"{where} all: no GPU is visible (CUDA_VISIBLE_DEVICES="
                                f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
        return list(available)
    if len(request) > len(available):
        raise ExecutorError(f"{where}: asks for {len(request)} GPUs but this machine has {len(available)}: {inventory}")
    by_index = {g.index: g for g in available}
    missing = [i for i in request if i not in by_index]
    if missing:
        raise ExecutorError(f"{where}: GPU {', '.join(map(str, missing))} does not exist; this machine has "
                            f"{len(available)}: {inventory}")
    return [by_index[i] for i in request]
