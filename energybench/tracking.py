"""Measure your own training: ``energybench.Tracker``, the runner's Meter around code you already have.

    import energybench
    with energybench.Tracker(output_dir="runs/mine", label="my-lora", model=model) as s:
        with s.window("train"):
            train()
        with s.window("eval"):
            evaluate()
    # one row appended to runs/mine/results.jsonl: `energybench report runs/mine`

The windows are measured by the same trackers as every suite run
(:func:`energybench.measure.trackers.build_trackers`: NVML sampler with the
energy counter, power integral and READ's estimate; CodeCarbon for CPU/RAM;
CUDA and RSS peaks), so the row has the same fields, units and provenance as
a runner row (DESIGN.md, "What every number means"): energies in kWh, power
in W, memory in bytes, times in seconds.

Windows are sequential: opening one while another is open is an error (the
trackers could measure both, but every figure of the outer one would then
include the inner one's, and rows would double-count). An exception inside a
window closes it, marks the row failed with the error, and is re-raised.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from energybench.measure.figures import MEASURED, Figures
from energybench.measure.meter import Meter
from energybench.measure.settings import MeasureSettings
from energybench.measure.trackers import build_trackers
from energybench.results import RESULTS_FILE, RunResult, append_result

#: Figures that add up over consecutive parts of a window (``reading`` sums them).
ADDITIVE = ("wall_s", "energy_kwh", "emissions_kg", "gpu_energy_kwh", "gpu_energy_power_kwh", "gpu_energy_read_kwh",
            "cpu_energy_kwh", "ram_energy_kwh", "gpu_sample_count")
TRACEBACK_TAIL_LINES = 25


class WindowError(RuntimeError):
    """Windows were nested, overlapped, repeated or used outside the Tracker's ``with`` block."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_devices() -> list:
    """The device this process computes on: ``cuda:LOCAL_RANK`` under torchrun, else the current CUDA device, else CPU.

    Only that GPU is measured, so under torchrun each rank's row has its own GPU's energy (NVML matches it by UUID)."""
    import torch

    if not torch.cuda.is_available():
        return [torch.device("cpu")]
    rank = os.environ.get("LOCAL_RANK")
    return [torch.device("cuda", int(rank) if rank is not None else torch.cuda.current_device())]


def _combine(parts: list[dict]) -> dict:
    """Figures of consecutive parts of one window as one: additive figures summed, peaks maxed, the rest from the
    last part. Null where any part is null (a sum missing a part would understate)."""
    out = Figures()
    last = parts[-1]
    for name, value in last.items():
        if name in ("provenance", "reasons", "warnings", "gpu_devices"):
            continue
        prov, reason = last["provenance"].get(name, MEASURED), last["reasons"].get(name)
        values = [p.get(name) for p in parts]
        if name in ADDITIVE or name.startswith("peak_"):
            if any(v is None for v in values):
                why = next(p["reasons"].get(name) for p in parts if p.get(name) is None)
                out.null(name, why or "null in a part of the window")
                continue
            value = sum(values) if name in ADDITIVE else max(values)
        out.put(name, value, prov, reason)
    return {**out.as_dict(), "partial": True}


class Tracker:
    """Measure named windows of your own code and append one ``RunResult`` row to ``output_dir/results.jsonl``.

    output_dir: folder of the row (``energybench report/compare/history`` read it).
    label: the row's method label (the report's row name), e.g. ``"my-lora"``.
    model: optional ``torch.nn.Module``; gives trainable/total parameter counts, and with ``batch`` (a dict of
        tensors the model takes, labels included) the deterministic accounting of one training step
        (``mem_model_bytes`` by parts, ``train_flops``) on a CPU copy, as every suite run has.
    loss_fn: ``loss_fn(model) -> loss`` for that accounting, when the model is not called as
        ``model(**batch).loss`` (a Hugging Face model is); with it, ``batch`` may be omitted.
    measure: the suite's ``measure:`` block (a dict or :class:`MeasureSettings`); defaults as in a suite.
    devices: devices to measure; default :func:`default_devices` (only this process's GPU).
    backbone, task, seed, config: stored in the row so reports group it (default backbone: the model's class).
    """

    def __init__(self, output_dir: str | os.PathLike, label: str, model: Any = None, *, batch: dict | None = None,
                 loss_fn: Callable[[Any], Any] | None = None,
                 measure: MeasureSettings | dict | None = None, devices: list | None = None,
                 backbone: str | None = None, task: str = "custom", seed: int = 0, config: dict | None = None,
                 suite: str = "tracker"):
        if not label or not isinstance(label, str):
            raise ValueError("Tracker(label=...): a non-empty string naming the row (e.g. 'my-lora')")
        self.output_dir, self.label, self.model, self.batch = Path(output_dir), label, model, batch
        self.loss_fn = loss_fn
        self.measure = measure if isinstance(measure, MeasureSettings) else MeasureSettings.model_validate(measure or {})
        self.devices = devices
        self.backbone = backbone or (type(model).__name__ if model is not None else "custom")
        self.task, self.seed, self.suite, self.extra_config = task, seed, suite, dict(config or {})
        self.windows: dict[str, dict] = {}
        self.fields: dict[str, Any] = {}  # extra row fields (steps, score, metrics, method_info, …)
        self.row: RunResult | None = None
        self.error: str | None = None
        self._traceback: str | None = None
        self._meter: Meter | None = None
        self._open: str | None = None
        self._parts: list[dict] = []
        self._shadow = 0
        self._started_at: str | None = None

    # ----------------------------------------------------------- session
    def __enter__(self) -> "Tracker":
        if self._meter is not None:
            raise WindowError("this Tracker is already running; make a new Tracker for a new row")
        self.devices = self.devices if self.devices is not None else default_devices()
        self._started_at = _now()
        self._meter = Meter(build_trackers(self.measure, devices=self.devices))
        self._meter.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._open is not None:  # left open by a failure outside `with s.window(...)`
                self._close(self._open)
            if exc is not None and self.error is None:
                self._fail(exc)
        finally:
            self._meter.stop()
        self.row = self._write()
        return False

    # ----------------------------------------------------------- windows
    def begin_window(self, name: str) -> None:
        """Open window ``name`` (prefer ``with s.window(name):``)."""
        if self._meter is None:
            raise WindowError(f"window {name!r}: open windows inside `with energybench.Tracker(...) as s:`")
        if self._open is not None:
            raise WindowError(f"window {name!r} opened while window {self._open!r} is still open: Tracker windows "
                              f"cannot nest or overlap (the outer one's figures would include the inner one's); "
                              f"close {self._open!r} first")
        if name in self.windows:
            raise WindowError(f"window {name!r} was already measured in this Tracker; give each window its own name "
                              f"(e.g. {name + '_2'!r})")
        self._open, self._parts = name, []
        self._meter.begin_window(name)
        self._begin_shadow()

    def end_window(self, name: str) -> dict:
        """Close window ``name`` and return its figures."""
        if self._open != name:
            raise WindowError(f"window {name!r} is not the open window (open: {self._open!r})")
        return self._close(name)

    @contextmanager
    def window(self, name: str) -> Iterator[None]:
        """Measure the block as window ``name``; an exception closes it, marks the row failed and is re-raised."""
        self.begin_window(name)
        try:
            yield
        except BaseException as exc:
            self._close(name)
            self._fail(exc, name)
            raise
        self._close(name)

    def reading(self) -> dict[str, dict]:
        """Figures so far, without closing a window: every closed window, and the open one (``partial: True``)
        up to now. The open window's figures combine its parts since each earlier reading: energies, wall time
        and sample counts summed, peaks maxed, means from the latest part."""
        out = dict(self.windows)
        if self._open is not None:
            self._parts.append(dict(self._meter.end_window(self._shadow_name)))
            self._begin_shadow()
            out[self._open] = _combine(self._parts)
        return out

    # ----------------------------------------------------------- internals
    @property
    def _shadow_name(self) -> str:
        return f"{self._open}#part{self._shadow}"

    def _begin_shadow(self) -> None:
        self._shadow += 1
        self._meter.begin_window(self._shadow_name)

    def _close(self, name: str) -> dict:
        self._meter.end_window(self._shadow_name)
        self._meter.results.pop(self._shadow_name, None)
        res = dict(self._meter.end_window(name))
        self.windows[name] = res
        self._open, self._parts = None, []
        return res

    def _fail(self, exc: BaseException, window: str | None = None) -> None:
        where = f" in window {window!r}" if window else ""
        self.error = f"{type(exc).__name__}{where}: {exc}"
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        self._traceback = "".join("".join(lines).splitlines(keepends=True)[-TRACEBACK_TAIL_LINES:])

    def _params(self) -> tuple[int | None, int | None]:
        if self.model is None:
            return None, None
        from energybench.methods.base import count_parameters

        return count_parameters(self.model)

    def _accounting(self) -> dict:
        figs = Figures()
        if self.model is None or (self.batch is None and self.loss_fn is None) or not self.measure.accounting:
            why = ("no model given to Tracker(model=...)" if self.model is None else
                   "accounting disabled (measure.accounting: false)" if not self.measure.accounting else
                   "no batch given: pass Tracker(batch=...) (a dict of the model's inputs, labels included)")
            for name in ("mem_model_bytes", "train_flops"):
                figs.null(name, why)
            return figs.as_dict()
        import torch

        from energybench.measure.accounting import model_memory, train_step_flops

        batch = {k: v.cpu() if torch.is_tensor(v) else v for k, v in (self.batch or {}).items()}
        loss = self.loss_fn or (lambda m: m(**batch).loss)
        try:
            mem = model_memory(self.model, loss, lambda p: torch.optim.AdamW(p, lr=1e-3))
            for name, value in mem.as_fields().items():
                figs.put(name, value, MEASURED, "deterministic accounting on CPU (DESIGN.md)")
            figs.put("train_flops", train_step_flops(self.model, loss), MEASURED,
                     "torch.utils.flop_counter, one training step")
        except Exception as exc:  # noqa: BLE001 - the row still records what was measured
            for name in ("mem_model_bytes", "train_flops"):
                figs.null(name, f"accounting failed: {type(exc).__name__}: {exc}")
        return figs.as_dict()

    def _environment(self) -> dict:
        import torch

        from energybench import __version__

        env = {"energybench": __version__, "torch": torch.__version__, "python": platform.python_version(),
               "host": socket.gethostname(), "device": ", ".join(map(str, self.devices)),
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "rank": os.environ.get("RANK"),
               "local_rank": os.environ.get("LOCAL_RANK")}
        for dist in ("transformers", "peft"):
            try:
                from importlib.metadata import version

                env[dist] = version(dist)
            except Exception:  # noqa: BLE001
                pass
        return env

    def _write(self) -> RunResult:
        trainable, total = self._params()
        rank = os.environ.get("RANK")
        config = {"backbone": {"name": self.backbone, "path": None}, "task": {"name": self.task, "data_dir": None},
                  "method": {"name": self.label, "label": self.label, "settings": {}}, "seed": self.seed,
                  "rank": None if rank is None else int(rank), **self.extra_config}
        key = f"{self.label}|{self._started_at}|{socket.gethostname()}|{os.getpid()}|{rank}"
        row = RunResult(
            run_id="tracker-" + hashlib.sha256(key.encode()).hexdigest()[:16], suite=self.suite,
            backbone=self.backbone, task=self.task, method=self.label, method_name=self.label, seed=self.seed,
            config=config, status="failed" if self.error else "ok", error=self.error,
            traceback_tail=self._traceback, started_at=self._started_at, finished_at=_now(),
            trainable_params=trainable, total_params=total, windows=self.windows, accounting=self._accounting(),
            environment=self._environment(), **self.fields)
        append_result(self.output_dir / RESULTS_FILE, row)
        return row

    @property
    def results_path(self) -> Path:
        return self.output_dir / RESULTS_FILE
