"""One ``RunResult`` row per run, appended atomically to ``results.jsonl``.

The runner is the only writer. Each row is a complete line written whole
(``os.write`` may write fewer bytes than asked — a full disk does — so the
rest is written until done) and fsynced; a write that fails (ENOSPC, EIO)
truncates the file back to its earlier rows and raises
:class:`ResultsWriteError` naming the file and the free space. A kill can at
worst leave a torn *last* line; the reader skips it (with a warning) and the
next append cuts it off first, so a torn line never ends up in the middle of
the file. Report and baseline files go through :func:`write_file_atomic`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
RESULTS_FILE = "results.jsonl"


class RunResult(BaseModel):
    """One run of (backbone, task, method, seed). Figures that could not be
    measured are null, and ``windows[w]['reasons']`` / ``accounting['reasons']``
    say why; ``provenance`` says how each figure was obtained."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    run_id: str = Field(description="stable hash of the resolved configuration")
    suite: str
    backbone: str
    task: str
    method: str = Field(description="display label (unique in the suite)")
    method_name: str = Field(description="registered method name")
    seed: int
    config: dict[str, Any]
    status: Literal["ok", "failed"]
    error: str | None = None
    traceback_tail: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    score: float | None = Field(None, description="the task's GLUE metric on the test split")
    metrics: dict[str, float] = Field(default_factory=dict)
    val_score: float | None = None
    steps: int | None = None
    planned_steps: int | None = None
    epochs: float | None = None
    stopped_early: bool | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    windows: dict[str, dict[str, Any]] = Field(default_factory=dict)
    accounting: dict[str, Any] = Field(default_factory=dict)
    method_info: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    role: Literal["final", "trial"] = Field("final", description="trial: one trial of a learning-rate search")
    trial: dict[str, Any] | None = Field(None, description="a trial's study, number and parameters")
    curve: list[dict[str, Any]] = Field(default_factory=list, description="validation points with cumulative cost")
    target: dict[str, Any] | None = Field(None, description="the quality target the run was held to, and its source")
    to_target: dict[str, Any] | None = Field(None, description="the first curve point at or above the target")
    to_target_reason: str | None = Field(None, description="why to_target is null")
    pruned_at_step: int | None = Field(None, description="a search trial stopped by the pruner at this step")


def _cut_torn_tail(path: Path) -> None:
    """Drop an incomplete last line left by a writer killed mid-write."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        data = fh.seek(0) or fh.read()
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


class ResultsWriteError(RuntimeError):
    """A row (or a report file) could not be written whole, e.g. the disk is full; what was on disk before is
    intact (the partial write was cut off). The message names the file and the free space left."""


# The write call, a seam so tests can inject a short writer (a full disk without a mount).
_write = os.write


def _free_space(path: Path) -> str:
    try:
        st = os.statvfs(path if path.is_dir() else path.parent)
        return f"{st.f_bavail * st.f_frsize / 2**20:.1f} MiB free"
    except OSError:
        return "free space unknown"


def _write_all(fd: int, data: bytes) -> None:
    """Every byte or an OSError: os.write may write fewer bytes than asked (a full disk does exactly that)."""
    view = memoryview(data)
    while view:
        n = _write(fd, view)
        if not n or n < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def append_result(path: str | Path, row: RunResult | dict) -> None:
    """Append one row as one complete line, fsynced; :class:`ResultsWriteError` if it cannot be written whole,
    with the file cut back to the rows it held before (a short write never leaves a torn tail)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _cut_torn_tail(path)
    payload = row.model_dump(mode="json") if isinstance(row, RunResult) else row
    line = (json.dumps(payload, separators=(",", ":"), default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        before = os.fstat(fd).st_size
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, before)
                os.fsync(fd)
            except OSError:
                pass  # the next append cuts a torn tail anyway (_cut_torn_tail)
            raise ResultsWriteError(f"{path}: could not append a result row "
                                    f"({exc.strerror or exc}; {_free_space(path)}); the partial row was "
                                    "cut off, every earlier row is intact") from None
    finally:
        os.close(fd)


def write_file_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``path`` whole or not at all: a temporary file beside it, fsync, rename over it.

    A full disk or a read-only folder raises :class:`ResultsWriteError` naming the file; the old file, if any, is
    untouched and no temporary file is left behind."""
    path = Path(path)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise ResultsWriteError(f"{path}: cannot write ({exc.strerror or exc}; "
                                f"{_free_space(path)})") from None
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


class ResultsFileError(ValueError):
    """results.jsonl has a malformed line that is not a torn tail."""


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every parsable row, in file order. A torn last line is skipped with a warning;
    a malformed line elsewhere is an error naming file and line."""
    return [row for _, row in read_numbered_rows(path)]


def read_numbered_rows(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``(file:line, row)`` for every row (see :func:`read_rows`); every row is a JSON object."""
    path = Path(path)
    if path.is_dir() and path.name != RESULTS_FILE:
        path = path / RESULTS_FILE
    if path.is_dir():
        raise ResultsFileError(f"{path}: is a directory, not a results file; move it away (the runs it should "
                               "hold are lost) or choose another output directory")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results file (has the suite run? `energybench run SUITE`)")
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    rows = []
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if i == len(lines):  # no newline after it: a torn last line
                warnings.warn(f"{path}:{i}: skipping an incomplete last line (a run was interrupted while writing)",
                              TornLineWarning, stacklevel=2)
                continue
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise ResultsFileError(f"{path}:{i}: not a JSON result row ({why}); fix or remove that line") from None
        if not isinstance(row, dict):
            raise ResultsFileError(f"{path}:{i}: not a result row (a JSON object expected, got "
                                   f"{type(row).__name__}); fix or remove that line")
        if not isinstance(row.get("run_id"), str) or not row["run_id"]:
            raise ResultsFileError(f"{path}:{i}: not an energybench result row (no \"run_id\"); fix or remove "
                                   "that line")
        rows.append((f"{path}:{i}", row))
    return rows


class TornLineWarning(UserWarning):
    """A torn last line was skipped; callers print it as one plain line."""


def first_nonfinite(obj: Any, where: str = "") -> str | None:
    """The field path of the first ±inf or NaN number in ``obj`` (a parsed row), or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "(value)")
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = ((f"[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for k, v in items:
        sub = first_nonfinite(v, f"{where}{k}" if str(k).startswith("[") or not where else f"{where}.{k}")
        if sub:
            return sub
    return None


def latest_by_run(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last row of each run_id (a retried run supersedes its failure)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        out[r["run_id"]] = r
    return out


def finished_run_ids(path: str | Path) -> set[str]:
    path = Path(path)
    if not path.exists():
        return set()
    return {rid for rid, r in latest_by_run(read_rows(path)).items() if r.get("status") == "ok"}
