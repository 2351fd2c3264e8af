"""Runs a suite's grid, one child process per run, resumable and single-writer.

Isolation: each run executes in ``python -m energybench.run.child``, so an
exception, an out-of-memory or a kill loses that run only; the parent records
it as failed (error + the tail of what it printed) and goes on.

Where runs execute is the executor's business (:mod:`energybench.run.executors`):
serially by default, side by side on CPU (``--jobs``), one per GPU
(``--gpus``), or as Ray tasks (``--executor ray``). Whatever the executor,
this module alone expands the grid, skips finished runs and appends rows.

Resumability: runs are keyed by a hash of their resolved configuration; a run
whose latest row in results.jsonl is ``ok`` is skipped. Failed runs are tried
again on the next invocation. The executor is not part of the hash, so a grid
started locally can be finished on Ray and the other way round.

One writer: the parent alone appends to results.jsonl, under a lock file that
refuses a second ``run`` on the same output directory; concurrent runs hand
their rows to it, so lines cannot interleave.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from energybench.results import (
    RESULTS_FILE,
    RunResult,
    append_result,
    finished_run_ids,
    latest_by_run,
    read_rows,
    write_file_atomic,
)
from energybench.run.executors import (
    Executor,
    ExecutorSettings,
    LocalExecutor,
    make_executor,
)
from energybench.run.executors.process import OUTPUT_TAIL_LINES, run_in_child
from energybench.run.plan import RunSpec, expand
from energybench.run.stopping import StopRequested, StopSignals
from energybench.suite import Suite

__all__ = ["LOCK_FILE", "OUTPUT_TAIL_LINES", "GridSummary", "OutputDirError", "OutputDirLockedError", "output_lock",
           "run_in_child",
           "run_suite", "suite_executor_settings"]

LOCK_FILE = ".energybench.lock"


class OutputDirError(RuntimeError):
    """The output directory cannot be used (read-only, not an energybench output directory, ...); exit code 2."""


class OutputDirLockedError(OutputDirError):
    pass


OUTPUT_MARKERS = (RESULTS_FILE, "suite.json", LOCK_FILE)


def check_output_dir(out_dir: Path) -> None:
    """Refuse a folder that holds files but none of an energybench output directory's: writing there would
    overwrite someone's report.md or suite.json."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirError(f"{out_dir}: exists and is not a directory; choose another output directory")
    try:
        entries = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else set()
    except OSError as exc:
        raise OutputDirError(f"{out_dir}: cannot list the output directory ({exc.strerror or exc})") from None
    if entries and not entries & set(OUTPUT_MARKERS):
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputDirError(f"{out_dir}: not empty ({shown}) and not an energybench output directory (no "
                             f"{RESULTS_FILE}); refusing to write into it — choose an empty or new folder")


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir``; released even if the process is killed."""
    path = out_dir / LOCK_FILE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+", encoding="utf-8")
    except OSError as exc:
        what = "is a directory, not energybench's lock file; remove it" if path.is_dir() else (exc.strerror or exc)
        raise OutputDirError(f"{path if path.is_dir() else out_dir}: cannot use the output directory ({what})") \
            from None
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
    executor: str = "local"
    trials: int = 0  # search trials run in this invocation (not counted in total/ok/failed)
    trial_failures: list[str] = field(default_factory=list)


def suite_executor_settings(suite: Suite) -> ExecutorSettings:
    """The suite's ``executor:`` block, or the defaults (serial, local) where the suite has none."""
    value = getattr(suite, "executor", None)
    if value is None:
        return ExecutorSettings()
    return value if isinstance(value, ExecutorSettings) else ExecutorSettings.model_validate(value)


class _Progress:
    """The executor's events as lines above a tqdm bar; safe to call from the executor's threads."""

    def __init__(self, bar: tqdm, total: int, concurrent: bool) -> None:
        self.bar, self.total, self.concurrent = bar, total, concurrent
        self.lock = threading.Lock()
        self.numbers: dict[str, int] = {}

    def write(self, line: str) -> None:
        with self.lock:
            self.bar.write(line)

    def started(self, spec: RunSpec, where: str | None) -> None:
        with self.lock:
            n = self.numbers.setdefault(spec.run_id, len(self.numbers) + 1)
        self.write(f"[{n}/{self.total}] {spec.title}  ({spec.run_id})" + (f"  → {where}" if where else ""))

    def relay(self, spec: RunSpec, line: str) -> None:
        self.write(f"[{self.numbers.get(spec.run_id, '?')}]{line}" if self.concurrent else line)

    def note(self, message: str) -> None:
        self.write(message)


def _as_executor(executor, settings: ExecutorSettings) -> Executor:
    if executor is None:
        return make_executor(settings)
    if hasattr(executor, "run") and hasattr(executor, "prepare"):
        return executor
    # A plain callable ``(spec, relay) -> RunResult``: run serially through it (the walking skeleton's seam).
    return LocalExecutor(ExecutorSettings(), run_fn=lambda spec, relay, **_: executor(spec, relay))


class _Grid:
    """Dispatches batches of runs through one executor: skips finished runs, appends rows, counts them.

    Used once for a plain grid, and batch after batch when a search or relative targets impose an order.
    The executor is prepared on the first batch that has work, so a finished grid starts nothing.
    """

    def __init__(self, suite: Suite, ex: Executor, results: Path, summary: GridSummary, echo: Callable[[str], None],
                 stop: StopSignals):
        self.suite, self.ex, self.results, self.summary, self.echo, self.stop = suite, ex, results, summary, echo, stop
        self.bar: tqdm | None = None
        self.progress: _Progress | None = None

    def rows(self) -> dict[str, dict]:
        return latest_by_run(read_rows(self.results)) if self.results.exists() else {}

    def dispatch(self, specs: list[RunSpec], annotate: Callable[[dict, dict[str, dict]], dict] | None = None,
                 ) -> dict[str, dict]:
        """Run the pending ``specs``; return the latest row of every one of them (finished before or now).

        A final run is pending unless its latest row is ok; a search trial unless it has a row at all (a trial
        whose run failed is a finished trial). ``annotate(row, rows)`` may complete a row before it is appended.
        """
        rows = self.rows()
        if annotate is not None:
            self._rescore(specs, rows, annotate)
        pending = [s for s in specs if not (s.run_id in rows and (rows[s.run_id].get("status") == "ok"
                                                                  or s.role == "trial"))]
        finals = [s for s in specs if s.role == "final"]
        self.summary.total += len(finals)
        self.summary.skipped += len(finals) - sum(1 for s in pending if s.role == "final")
        if pending:
            self._start(len(pending))
            for spec, row in self.ex.run(pending, self.progress):
                payload = row.model_dump(mode="json")
                payload.update(role=spec.role, trial=spec.trial)  # also on rows the executor made for a lost child
                if annotate is not None:
                    payload = annotate(payload, rows)
                with self.stop.atomic():  # a signal takes effect between appends, never inside one
                    append_result(self.results, payload)
                    rows[spec.run_id] = payload
                    self._count(spec, row)
                    self.bar.update(1)
        return {s.run_id: rows[s.run_id] for s in specs if s.run_id in rows}

    def _rescore(self, specs: list[RunSpec], rows: dict[str, dict], annotate) -> None:
        """Hold finished final runs to the suite's current target: a target added or changed since they ran
        appends a corrected copy of their row (the latest row of a run wins), without training again."""
        fields = ("target", "to_target", "to_target_reason")
        n = 0
        for s in specs:
            old = rows.get(s.run_id)
            if s.role != "final" or old is None or old.get("status") != "ok":
                continue
            new = annotate(json.loads(json.dumps(old)), rows)
            if any(new.get(f) != old.get(f) for f in fields):
                append_result(self.results, new)
                rows[s.run_id] = new
                n += 1
        if n:
            self.echo(f"{n} finished run(s) re-scored against the suite's current target (no training)")

    def _start(self, n: int) -> None:
        if self.bar is None:
            for note in self.ex.prepare(self.suite, n):
                self.echo(note)
            self.bar = tqdm(total=0, unit="run", desc=self.suite.name, file=sys.stderr, dynamic_ncols=True)
            concurrent = getattr(self.ex, "name", "") != "local" or len(getattr(self.ex, "slots", [None])) > 1
            self.progress = _Progress(self.bar, 0, concurrent)
        self.bar.total += n
        self.progress.total = self.bar.total
        self.bar.refresh()

    def _count(self, spec: RunSpec, row: RunResult) -> None:
        s = self.summary
        if spec.role == "trial":
            s.trials += 1
            if row.status != "ok":
                s.trial_failures.append(f"{spec.title}: {row.error}")
            return
        if row.status == "ok":
            s.ok += 1
            return
        s.failed += 1
        s.failures.append(f"{spec.title}: {row.error}")
        # numbered: the next run's header may already be printed (its child started first)
        n = self.progress.numbers.get(spec.run_id, "?")
        self.progress.write(f"  FAILED [{n}/{self.progress.total}] {spec.title}: {row.error}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_suite(suite: Suite, out_dir: str | Path | None = None, *, echo: Callable[[str], None] = print,
              executor: Executor | Callable[[RunSpec, Callable[[str], None]], RunResult] | None = None,
              settings: ExecutorSettings | None = None, stop: StopSignals | None = None) -> GridSummary:
    """Run every pending run of ``suite``; return what happened.

    settings: where runs execute (default: the suite's ``executor:`` block, else serial and local);
    executor: an executor object to use instead (tests), or a callable run serially.
    With a ``search:`` block, every (backbone, task, method) first gets its learning-rate search
    (:mod:`energybench.run.search`); with a relative ``target:``, the reference method's runs finish first
    (:mod:`energybench.run.target`).
    stop: the signal handlers ``energybench run`` installed (a stop is raised between appends, never inside one).
    Raises :class:`energybench.run.executors.ExecutorError` before any run starts when the executor cannot start,
    :class:`OutputDirError` for an unusable output directory, :class:`~energybench.results.ResultsWriteError` when
    a row cannot be written (the grid stops; earlier rows are intact) and
    :class:`~energybench.run.stopping.StopRequested` (with ``.summary``) on SIGINT/SIGTERM.
    """
    from energybench.run import target as T

    out = Path(out_dir or suite.output_dir)
    results = out / RESULTS_FILE
    settings = settings or suite_executor_settings(suite)
    ex = _as_executor(executor, settings)
    summary = GridSummary(executor=getattr(ex, "name", "local"))
    t0 = time.perf_counter()
    stop = stop or StopSignals()  # not entered: no handlers installed, atomic() is a plain block
    check_output_dir(out)
    with output_lock(out):
        write_file_atomic(out / "suite.json", suite.model_dump_json(indent=2))
        grid = _Grid(suite, ex, results, summary, echo, stop)
        try:
            learning_rates = None
            if suite.search is not None:
                from energybench.run.search import run_searches

                learning_rates = run_searches(suite, out, grid.dispatch, echo)
            runs = expand(suite, learning_rates)
            done = finished_run_ids(results)
            skipped = sum(1 for r in runs if r.run_id in done)
            if skipped:
                echo(f"{skipped} of {len(runs)} runs already finished in {out}; skipping them")
            reference = T.reference_method(suite.target, runs) if suite.target is not None else None
            annotate = None
            if suite.target is not None:
                def annotate(row: dict, rows: dict[str, dict]) -> dict:
                    return T.annotate(row, suite.target, [*rows.values(), row], reference)  # the reference is its own
            for phase in T.phases(suite.target, runs):
                grid.dispatch(phase, annotate)
        except StopRequested as exc:
            exc.summary = summary
            raise
        finally:
            grid.close()
            if grid.bar is not None:
                ex.close()
    summary.wall_s = time.perf_counter() - t0
    return summary
