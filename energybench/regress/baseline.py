"""Baseline files for the gate: the latest ok row of each run of a suite, schema-versioned, sorted for stable diffs."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from energybench import __version__
from energybench.regress.git import git_commit as current_git_commit
from energybench.regress.sides import (
    BASELINE_FORMAT,
    BASELINE_SCHEMA_VERSION,
    CompareInputError,
    load_side,
)
from energybench.results import ResultsWriteError, latest_by_run, write_file_atomic

BASELINE_DROP = ("method_info", "traceback_tail", "warnings")


def baseline_document(rows: list[dict], source: str, git_commit: str | None = None) -> dict:
    """The baseline file's content: schema-versioned, the latest ok row of each run, sorted for stable diffs."""
    ok = [r for r in latest_by_run(rows).values() if r.get("status") == "ok"]
    ok.sort(key=lambda r: (r["backbone"], r["task"], r["method"], r["seed"], r["run_id"]))
    return {"format": BASELINE_FORMAT, "schema_version": BASELINE_SCHEMA_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "energybench": __version__, "source": source, "git_commit": git_commit,
            "rows": [_baseline_row(r) for r in ok]}


def _baseline_row(r: dict) -> dict:
    """A row without what compare never reads (training history, tracebacks) or a committed file should not
    carry (the host name)."""
    out = {k: v for k, v in r.items() if k not in BASELINE_DROP}
    if isinstance(out.get("environment"), dict):
        out["environment"] = {k: v for k, v in out["environment"].items() if k != "host"}
    return out


def export_baseline(run_dir: str | Path, out: str | Path) -> tuple[Path, dict]:
    """Write a baseline file from ``run_dir``; returns its path and content."""
    side = load_side(run_dir)
    doc = baseline_document(side.rows, str(run_dir), current_git_commit())
    if not doc["rows"]:
        raise CompareInputError(f"{run_dir}: no finished (ok) run to put in a baseline")
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsWriteError(f"{out.parent}: cannot create the folder ({exc.strerror or exc})") from None
    write_file_atomic(out, json.dumps(doc, indent=1, sort_keys=True) + "\n")  # temp file, fsync, rename
    return out, doc
