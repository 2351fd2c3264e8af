"""One run in a process of its own: ``python -m energybench.run.child SPEC RESULT``, or forked warm.

Every executor ends here (the Ray executor too, inside its task), so an
exception, an out-of-memory or a kill loses that run only. A child that dies
before writing its result becomes a failed row carrying the tail of what it
printed and its peak resident memory, read from the kernel when it is reaped
(a forked run is reaped by the fork server, so that peak is null there).

:func:`run_child` works on the spec's JSON and a row skeleton, not on a
:class:`RunSpec`, so a Ray worker can call it without importing torch (the
suite schema does): the run's process imports what it needs, or inherits it
from the fork server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from energybench.results import RunResult
from energybench.run.executors import forkserver
from energybench.run.isolate import child_command

if TYPE_CHECKING:
    from energybench.run.plan import RunSpec

OUTPUT_TAIL_LINES = 40
CHILD_COMMAND = child_command("energybench.run.child")  # without the cwd on sys.path (run/isolate.py)


def row_base(spec: RunSpec) -> dict[str, Any]:
    """The fields that identify a run's row, from its spec (what a failed row still carries)."""
    return dict(run_id=spec.run_id, suite=spec.suite, backbone=spec.backbone.display, task=spec.task.name,
                method=spec.method.display, method_name=spec.method.name, seed=spec.seed, config=spec.config())


def failed_row(spec: RunSpec, error: str, **extra) -> RunResult:
    """A failed row for ``spec`` when no child reported one."""
    return RunResult(**row_base(spec), status="failed", error=error, **extra)


def _reap(proc: subprocess.Popen) -> tuple[int, int | None]:
    """Exit code (negative: the signal) and the child's peak RSS in bytes (None if another waiter reaped it)."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # already reaped (e.g. by Popen.poll in a terminate() from another thread)
        return proc.wait(), None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024  # Linux reports kilobytes


def run_child(spec_json: str, base: dict[str, Any], relay: Callable[[str], None], env: dict | None = None, *,
              on_spawn: Callable[[Any], None] | None = None,
              command: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the spec in a process of its own; return its row as a dict (a failed one if the process died).

    The process is forked from the warm fork server when the run can see no GPU (see
    :mod:`energybench.run.executors.forkserver`), else it is ``python -m energybench.run.child``;
    ``command`` forces a command line (tests substitute misbehaving children).
    """
    env = dict(env or {})
    with tempfile.TemporaryDirectory(prefix="energybench-") as tmp:
        spec_path, result_path = Path(tmp, "spec.json"), Path(tmp, "result.json")
        spec_path.write_text(spec_json, encoding="utf-8")
        tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        forked = command is None and forkserver.wanted(env)
        if forked:
            proc, stream = forkserver.start(str(spec_path), str(result_path), env)
        else:
            proc = subprocess.Popen([*(command or CHILD_COMMAND), str(spec_path), str(result_path)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                    env={**os.environ, **env})
            assert proc.stdout is not None
            stream = proc.stdout
        if on_spawn is not None:
            on_spawn(proc)
        with stream:
            for line in stream:
                line = line.rstrip("\n")
                tail.append(line)
                if line.startswith("  "):
                    relay(line)
        code, peak_rss = (proc.wait(), None) if forked else _reap(proc)
        if result_path.exists():
            return json.loads(result_path.read_text(encoding="utf-8"))
    reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
    oom_text = any("out of memory" in l.lower() for l in tail)
    row: dict[str, Any] = {**base, "status": "failed", "traceback_tail": "\n".join(tail)}
    if code == -9 or oom_text:
        reason += " (out of memory)" if oom_text else " (out of memory? SIGKILL is what the kernel's OOM killer sends)"
        why = ("the run's process was forked by the fork server, which reaps it" if forked
               else "the child was reaped elsewhere")
        row["oom"] = {"kind": "gpu" if "cuda" in row["traceback_tail"].lower() else "host", "peak_rss_bytes": peak_rss,
                      "reasons": {} if peak_rss is not None else {"peak_rss_bytes": why}}
    if peak_rss is not None:
        reason += f"; its peak resident memory was {peak_rss / 2**20:.0f} MiB"
    row["error"] = f"run process {reason} before reporting"
    return row


def run_in_child(spec: RunSpec, relay: Callable[[str], None], env: dict | None = None, *,
                 on_spawn: Callable[[Any], None] | None = None,
                 command: Sequence[str] | None = None) -> RunResult:
    """Execute ``spec`` in a process of its own (see :func:`run_child`) and return its row (failed if it died).

    env: variables added to this process's environment for the child (CUDA_VISIBLE_DEVICES, thread counts).
    on_spawn: told the child's Popen (or :class:`~energybench.run.executors.forkserver.ForkedRun`), so an
        executor can stop it when the grid is abandoned.
    command: the child's command line before SPEC RESULT (tests substitute a misbehaving child); given, the
        run is never forked.
    """
    return RunResult.model_validate(run_child(spec.model_dump_json(), row_base(spec), relay, env,
                                              on_spawn=on_spawn, command=command))
