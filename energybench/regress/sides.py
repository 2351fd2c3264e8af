"""What the gate reads: a run directory, a results.jsonl or a baseline file, each validated row by row so a bad input
is named by file and line (:class:`CompareInputError`, exit code 2)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from energybench.results import (
    RESULTS_FILE,
    SCHEMA_VERSION,
    ResultsFileError,
    RunResult,
    first_nonfinite,
    read_numbered_rows,
)

BASELINE_FORMAT = "energybench-baseline"
BASELINE_SCHEMA_VERSION = 1


class CompareInputError(ValueError):
    """A side cannot be read or is not what compare expects (exit code 2)."""


@dataclass
class Side:
    """The rows of one side of a comparison, and where they came from."""

    label: str
    kind: str  # "run directory", "results file" or "baseline file"
    rows: list[dict]


def _validate(row: Any, where: str) -> dict:
    if not isinstance(row, dict):
        raise CompareInputError(f"{where}: not a result row (a JSON object expected, got {type(row).__name__})")
    try:
        RunResult.model_validate(row)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise CompareInputError(f"{where}: not an energybench result row — {loc}: {first['msg']} "
                                f"({exc.error_count()} problem(s))") from None
    bad = first_nonfinite(row)
    if bad:  # -inf energy would count as an improvement, NaN compares false with everything
        raise CompareInputError(f"{where}: {bad} is not a finite number; a result figure is a number or null")
    if int(row.get("schema_version", 1)) > SCHEMA_VERSION:
        raise CompareInputError(f"{where}: written by a newer energybench (row schema {row['schema_version']}, "
                                f"this one reads up to {SCHEMA_VERSION}); upgrade energybench")
    return row


def load_side(path: str | Path) -> Side:
    """Read a run directory, a results.jsonl or a baseline file; :class:`CompareInputError` on anything else."""
    p = Path(path)
    if not p.exists():
        raise CompareInputError(f"{p}: no such file or directory (expected a run directory, a results.jsonl "
                                "or a baseline file from `energybench baseline export`)")
    if p.is_dir():
        if not (p / RESULTS_FILE).exists():
            raise CompareInputError(f"{p}: directory has no {RESULTS_FILE} (has the suite run?)")
        return Side(str(p), "run directory", _read_results(p / RESULTS_FILE))
    text = p.read_text(encoding="utf-8", errors="replace")
    stripped = text.strip()
    if not stripped:
        raise CompareInputError(f"{p}: file is empty")
    try:
        doc = json.loads(stripped)
    except json.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and "format" in doc:
        return Side(str(p), "baseline file", _read_baseline(p, doc))
    if p.suffix == ".json" and not (isinstance(doc, dict) and "run_id" in doc):
        raise CompareInputError(f"{p}: not an energybench baseline (no \"format\": \"{BASELINE_FORMAT}\" field); "
                                "write one with `energybench baseline export RUN_DIR -o FILE`")
    return Side(str(p), "results file", _read_results(p))


def _read_results(p: Path) -> list[dict]:
    try:
        rows = read_numbered_rows(p)
    except ResultsFileError as exc:
        raise CompareInputError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CompareInputError(f"{p}: cannot read ({exc})") from None
    return [_validate(r, where) for where, r in rows]


def _read_baseline(p: Path, doc: dict) -> list[dict]:
    if doc.get("format") != BASELINE_FORMAT:
        raise CompareInputError(f"{p}: \"format\" is {doc.get('format')!r}, not {BASELINE_FORMAT!r}")
    version = doc.get("schema_version")
    if not isinstance(version, int):
        raise CompareInputError(f"{p}: baseline has no integer \"schema_version\"")
    if version > BASELINE_SCHEMA_VERSION:
        raise CompareInputError(f"{p}: baseline schema {version} is newer than this energybench reads "
                                f"({BASELINE_SCHEMA_VERSION}); upgrade energybench")
    rows = doc.get("rows")
    if not isinstance(rows, list):
        raise CompareInputError(f"{p}: baseline has no \"rows\" list")
    return [_validate(r, f"{p} rows[{i}]") for i, r in enumerate(rows)]


