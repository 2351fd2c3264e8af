"""Which NVML device is CUDA device ``i`` of this process?

CUDA numbers the devices a process sees 0..n-1 after applying
``CUDA_VISIBLE_DEVICES``, in its own order (fastest first unless
``CUDA_DEVICE_ORDER=PCI_BUS_ID``); NVML numbers all devices of the machine in
PCI bus order. Reading the energy counter of the wrong board silently
measures someone else's run, so the mapping goes through the device UUID,
which both sides agree on:

1. torch's ``get_device_properties(i).uuid`` when torch sees CUDA;
2. otherwise the i-th entry of ``CUDA_VISIBLE_DEVICES`` when it is a UUID
   (``GPU-…``, a unique prefix of one, or a MIG id);
3. otherwise an index: the i-th entry of ``CUDA_VISIBLE_DEVICES`` (or i
   itself) taken as NVML's index, with a recorded caveat unless
   ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` makes the two orders agree.

A MIG instance maps to its parent GPU: NVML's power and energy exist only for
the whole board, shared by every instance on it; the caveat says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

UuidLookup = Callable[[int], "str | None"]


@dataclass
class GpuDevice:
    """One GPU the run uses, as NVML knows it.

    cuda_index: the process's CUDA ordinal (``cuda:i``).
    nvml_index: NVML's index of the board (PCI order), None if unresolved.
    uuid: the board's NVML UUID (``GPU-…``), None if unresolved.
    handle: NVML device handle, None if unresolved (then ``error`` says why).
    mapped_by: "uuid (torch)", "uuid (CUDA_VISIBLE_DEVICES)", "index" or "mig parent".
    caveat: a sentence the result should carry (uncertain mapping, MIG sharing).
    """

    cuda_index: int
    nvml_index: int | None = None
    uuid: str | None = None
    handle: Any = None
    mapped_by: str | None = None
    caveat: str | None = None
    error: str | None = None


def normalize_uuid(value: str) -> str:
    """Lower-case hex UUID without the ``GPU-``/``MIG-`` prefix (torch prints none, NVML prints ``GPU-``)."""
    v = str(value).strip().lower()
    for prefix in ("mig-", "gpu-"):
        if v.startswith(prefix):
            v = v[len(prefix):]
    return v


def parse_visible_devices(value: str | None) -> list[str] | None:
    """Entries of ``CUDA_VISIBLE_DEVICES``; None when unset (every device visible).

    As CUDA does, parsing stops at the first entry that is neither an index
    nor an id (``"0,-1,2"`` shows device 0 only), and an empty value hides all.
    """
    if value is None:
        return None
    out: list[str] = []
    for token in value.split(","):
        token = token.strip()
        if not token:
            break
        if token.isdigit() or token.upper().startswith(("GPU-", "MIG-")):
            out.append(token)
        else:
            break
    return out


def torch_cuda_uuid(index: int) -> str | None:
    """The UUID torch reports for CUDA device ``index``, or None without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            return None
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        return str(uuid) if uuid else None
    except Exception:  # noqa: BLE001 - a missing uuid only weakens the mapping
        return None


def cuda_ordinals(devices: Iterable[Any] | None) -> list[int]:
    """CUDA ordinals of the run's devices (``torch.device``, ``"cuda:1"``, ints); CPU entries dropped.

    ``None`` means every CUDA device torch sees (none without CUDA).
    """
    if devices is None:
        try:
            import torch

            return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        except Exception:  # noqa: BLE001
            return []
    out: list[int] = []
    for d in devices:
        if isinstance(d, int):
            idx: int | None = d
        else:
            text = str(d)
            if not text.startswith("cuda"):
                continue
            _, _, tail = text.partition(":")
            idx = int(tail) if tail else _current_cuda_device()
        if idx is not None and idx not in out:
            out.append(idx)
    return out


def _current_cuda_device() -> int:
    try:
        import torch

        return torch.cuda.current_device() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        return 0


def _nvml_boards(nvml) -> list[tuple[int, str, Any]]:
    boards = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        boards.append((i, str(nvml.nvmlDeviceGetUUID(h)), h))
    return boards


def _by_uuid_prefix(boards, wanted: str) -> tuple[int, str, Any] | None:
    hits = [b for b in boards if normalize_uuid(b[1]).startswith(wanted)]
    return hits[0] if len(hits) == 1 else None


def _mig_parent(nvml, mig_id: str, boards) -> tuple[int, str, Any] | None:
    """Parent board of a MIG id: ``MIG-<uuid>`` (CUDA 11.2+) or ``MIG-GPU-<uuid>/gi/ci`` (older)."""
    body = mig_id[4:] if mig_id.upper().startswith("MIG-") else mig_id
    if body.upper().startswith("GPU-"):
        return _by_uuid_prefix(boards, normalize_uuid(body.split("/")[0]))
    try:
        mig = nvml.nvmlDeviceGetHandleByUUID(mig_id if mig_id.upper().startswith("MIG-") else "MIG-" + mig_id)
        parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
        uuid = str(nvml.nvmlDeviceGetUUID(parent))
    except Exception:  # noqa: BLE001
        return None
    return next((b for b in boards if normalize_uuid(b[1]) == normalize_uuid(uuid)), None)


MIG_CAVEAT = ("cuda:{i} is a MIG instance of {uuid}; NVML reports power, energy and utilization only for the "
              "whole GPU, shared by all its instances")
INDEX_CAVEAT = ("cuda:{i} mapped to NVML index {n} without a UUID check: CUDA orders devices fastest-first "
                "unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML by PCI bus, so this may be another board")


def resolve_gpus(
    ordinals: list[int],
    nvml,
    env: Mapping[str, str] | None = None,
    cuda_uuid: UuidLookup = torch_cuda_uuid,
) -> list[GpuDevice]:
    """Map each CUDA ordinal to its NVML board (see the module docstring for the order of evidence)."""
    env = os.environ if env is None else env
    visible = parse_visible_devices(env.get("CUDA_VISIBLE_DEVICES"))
    pci_order = env.get("CUDA_DEVICE_ORDER", "").upper() == "PCI_BUS_ID"
    boards = _nvml_boards(nvml)
    out = []
    for i in ordinals:
        out.append(_resolve_one(i, nvml, boards, visible, pci_order, cuda_uuid, env))
    return out


def _resolve_one(i, nvml, boards, visible, pci_order, cuda_uuid, env) -> GpuDevice:
    dev = GpuDevice(cuda_index=i)
    token = visible[i] if visible is not None and i < len(visible) else None
    hit, how, caveat = None, None, None
    torch_uuid = cuda_uuid(i)
    if torch_uuid:
        hit, how = next((b for b in boards if normalize_uuid(b[1]) == normalize_uuid(torch_uuid)), None), "uuid (torch)"
        if hit is None:
            hit, how, caveat = _mig_parent(nvml, "MIG-" + normalize_uuid(torch_uuid), boards), "mig parent", MIG_CAVEAT
    if hit is None and visible is not None and token is None:
        dev.error = f"cuda:{i} is not among CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r}"
        return dev
    if hit is None and token is not None and token.upper().startswith("GPU-"):
        hit, how, caveat = _by_uuid_prefix(boards, normalize_uuid(token)), "uuid (CUDA_VISIBLE_DEVICES)", None
    elif hit is None and token is not None and token.upper().startswith("MIG-"):
        hit, how, caveat = _mig_parent(nvml, token, boards), "mig parent", MIG_CAVEAT
    elif hit is None:
        n = int(token) if token is not None else i
        hit = boards[n] if 0 <= n < len(boards) else None
        how, caveat = "index", (None if pci_order else INDEX_CAVEAT)
    if hit is None:
        dev.error = (f"cuda:{i} (CUDA_VISIBLE_DEVICES entry {token!r}, torch uuid {torch_uuid!r}) "
                     f"matches no NVML device of {len(boards)}")
        return dev
    dev.nvml_index, dev.uuid, dev.handle, dev.mapped_by = hit[0], hit[1], hit[2], how
    dev.caveat = caveat.format(i=i, uuid=hit[1], n=hit[0]) if caveat else None
    return dev
