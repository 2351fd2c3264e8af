"""One ``RunResult`` row per run, appended atomically to ``results.jsonl``.

The runner is the only writer. Each row is one ``os.write`` of a complete
line followed by fsync, so a kill can at worst leave a torn *last* line; the
reader skips it (with a warning) and the next append cuts it off first, so a
torn line never ends up in the middle of the file.
"""

from __future__ import annotations

import json
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


def append_result(path: str | Path, row: RunResult | dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _cut_torn_tail(path)
    payload = row.model_dump(mode="json") if isinstance(row, RunResult) else row
    line = (json.dumps(payload, separators=(",", ":"), default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


class ResultsFileError(ValueError):
    """results.jsonl has a malformed line that is not a torn tail."""


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every parsable row, in file order. A torn last line is skipped with a warning;
    a malformed line elsewhere is an error naming file and line."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results file (has the suite run? `energybench run SUITE`)")
    lines = path.read_bytes().split(b"\n")
    rows = []
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rows.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            if i == len(lines):  # no newline after it: a torn last line
                warnings.warn(f"{path}:{i}: skipping an incomplete last line (a run was interrupted while writing)")
                continue
            raise ResultsFileError(f"{path}:{i}: not a JSON result row ({exc.msg})") from None
    return rows


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
