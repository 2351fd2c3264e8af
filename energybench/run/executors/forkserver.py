"""CPU runs forked from a warm interpreter: torch and transformers are imported once per grid, not once per run.

Starting a fresh interpreter and importing torch, transformers' T5 and the
measurement stack costs 6–7 s of CPU per run on a 2-core machine; for the
quickstart's 54 runs of 10–20 s each, that was a third of the grid's wall
time. multiprocessing's fork server imports those modules once (``PRELOAD``)
and forks a new process for every run, so isolation is unchanged: each run
still has a process of its own, and an exception, an out-of-memory or a kill
loses that run only.

Only runs that can see no GPU are forked (the child's ``CUDA_VISIBLE_DEVICES``
is the empty string): CUDA must be initialised after ``CUDA_VISIBLE_DEVICES``
is set, in a process that never touched the driver, or a run pinned to GPU 3
could end up on GPU 0 with another run's energy. GPU runs keep a fresh
interpreter each; at GPU run lengths the import time does not matter.

``ENERGYBENCH_FORKSERVER=0`` turns forking off (every run then starts
``python -m energybench.run.child``), e.g. to rule it out when debugging.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import IO, Mapping

DISABLE_ENV = "ENERGYBENCH_FORKSERVER"
# What every run imports before its first step; modules that fail to import are skipped by the server.
# energybench.run.isolate comes first: it takes the current directory off the server's sys.path.
PRELOAD = ["energybench.run.isolate", "torch", "transformers.models.t5.modeling_t5", "peft", "codecarbon",
           "energybench.run.child", "energybench.run.execute", "energybench.methods.base"]

_lock = threading.Lock()
_context = None
_ENV_LOCK = threading.Lock()  # guards the PYTHONSAFEPATH save/set/restore in start()


def wanted(env: Mapping[str, str]) -> bool:
    """Fork this run? Only when it can see no GPU and forking is not turned off."""
    if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    visible = env.get("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
    return visible is not None and visible.strip() == ""


def _ctx():
    global _context
    with _lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)  # ignored if this process's fork server is already running
            _context = ctx
        return _context


class ForkedRun:
    """The part of ``subprocess.Popen`` the executors use (pid, returncode, terminate, kill, wait)."""

    def __init__(self, process) -> None:
        self.process = process
        self.pid = process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def wait(self) -> int:
        self.process.join()
        return self.process.exitcode


def start(spec_path: str, result_path: str, env: Mapping[str, str]) -> tuple[ForkedRun, IO[str]]:
    """Fork a run from the warm server; returns it and its merged stdout/stderr as a text stream."""
    from energybench.run.child import forked_main

    ctx = _ctx()
    reader, writer = ctx.Pipe(duplex=False)
    process = ctx.Process(target=forked_main, args=(spec_path, result_path, writer, dict(env)),
                          name="energybench-run")
    # The server is started (on the first start()) as `python -c ...`, which would put the current directory
    # first on its sys.path; PYTHONSAFEPATH (Python 3.11+) stops that before anything is imported
    # (run/isolate.py does it on 3.10). Set only while starting: the caller's own subprocesses keep their path.
    # One lock for every slot's thread: two threads interleaving the save and the restore would leave
    # PYTHONSAFEPATH=1 set for good (the second saves the first's "1"), and every later subprocess of the
    # caller would lose its script's folder from sys.path.
    with _ENV_LOCK:
        previous = os.environ.get("PYTHONSAFEPATH")
        os.environ["PYTHONSAFEPATH"] = "1"
        try:
            process.start()
        finally:
            if previous is None:
                os.environ.pop("PYTHONSAFEPATH", None)
            else:
                os.environ["PYTHONSAFEPATH"] = previous
            writer.close()  # the child holds the only write end now: EOF comes when it exits
    stream = os.fdopen(os.dup(reader.fileno()), "r", encoding="utf-8", errors="replace")
    reader.close()
    return ForkedRun(process), stream
