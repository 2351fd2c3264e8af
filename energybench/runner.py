"""Runs a suite's grid, one child process per run, resumable and single-writer.

Isolation: each run executes in ``python -m energybench.child``, so an
exception, an out-of-memory or a kill loses that run only; the parent records
it as failed (error + the tail of what it printed) and goes on.

Resumability: runs are keyed by a hash of their resolved configuration; a run
whose latest row in results.jsonl is ``ok`` is skipped. Failed runs are tried
again on the next invocation.

One writer: the parent alone appends to results.jsonl, under a lock file that
refuses a second ``run`` on the same output directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from energybench.plan import RunSpec, expand
from energybench.results import RESULTS_FILE, RunResult, append_result, finished_run_ids
from energybench.suite import Suite

LOCK_FILE = ".energybench.lock"
OUTPUT_TAIL_LINES = 40


class OutputDirLockedError(RuntimeError):
    pass


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir``; released even if the process is killed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    fh = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise OutputDirLockedError(
            f"{out_dir} is in use by another `energybench run` ({holder}); wait for it to finish "
            f"or choose another output directory (--output-dir)") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    try:
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


@dataclass
class GridSummary:
    total: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def run_in_child(spec: RunSpec, relay: Callable[[str], None], env: dict | None = None) -> RunResult:
    """Execute ``spec`` in a fresh interpreter and return its row (failed if the child died)."""
    with tempfile.TemporaryDirectory(prefix="energybench-") as tmp:
        spec_path, result_path = Path(tmp, "spec.json"), Path(tmp, "result.json")
        spec_path.write_text(spec.model_dump_json(), encoding="utf-8")
        tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        proc = subprocess.Popen([sys.executable, "-m", "energybench.child", str(spec_path), str(result_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env={**os.environ, **(env or {})})
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if line.startswith("  "):
                relay(line)
        code = proc.wait()
        if result_path.exists():
            return RunResult.model_validate(json.loads(result_path.read_text(encoding="utf-8")))
        reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if code == -9 or any("out of memory" in l.lower() for l in tail):
            reason += " (out of memory?)" if code == -9 else " (out of memory)"
        return RunResult(run_id=spec.run_id, suite=spec.suite, backbone=spec.backbone.display, task=spec.task.name,
                         method=spec.method.display, method_name=spec.method.name, seed=spec.seed,
                         config=spec.config(), status="failed", error=f"run process {reason} before reporting",
                         traceback_tail="\n".join(tail))


def run_suite(suite: Suite, out_dir: str | Path | None = None, *, echo: Callable[[str], None] = print,
              executor: Callable[[RunSpec, Callable[[str], None]], RunResult] = run_in_child) -> GridSummary:
    """Run every pending run of ``suite``; return what happened."""
    out = Path(out_dir or suite.output_dir)
    results = out / RESULTS_FILE
    runs = expand(suite)
    summary = GridSummary(total=len(runs))
    t0 = time.perf_counter()
    with output_lock(out):
        done = finished_run_ids(results)
        pending = [r for r in runs if r.run_id not in done]
        summary.skipped = len(runs) - len(pending)
        if summary.skipped:
            echo(f"{summary.skipped} of {len(runs)} runs already finished in {results}; skipping them")
        (out / "suite.json").write_text(suite.model_dump_json(indent=2), encoding="utf-8")
        bar = tqdm(total=len(pending), unit="run", desc=suite.name, disable=not pending, file=sys.stderr,
                   dynamic_ncols=True)
        for i, spec in enumerate(pending, start=1):
            bar.write(f"[{i}/{len(pending)}] {spec.title}  ({spec.run_id})")
            row = executor(spec, bar.write)
            append_result(results, row)
            if row.status == "ok":
                summary.ok += 1
            else:
                summary.failed += 1
                summary.failures.append(f"{spec.title}: {row.error}")
                bar.write(f"  FAILED: {row.error}")
            bar.update(1)
        bar.close()
    summary.wall_s = time.perf_counter() - t0
    return summary
