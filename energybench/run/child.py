"""Entry point of a run's own process: ``python -m energybench.run.child SPEC.json RESULT.json``.

The parent (the runner) writes the spec, reads the result and appends it;
the child never touches results.jsonl. Progress lines go to stdout, which
the parent relays. A child killed outright leaves no result file, and the
parent records the run as failed with what it printed last.

Three things the executors rely on happen here, before and after the run:

- ``ENERGYBENCH_NUM_THREADS`` caps torch's intra-op threads (runs side by
  side on one machine each get their share of the cores);
- the child exits when its parent dies, so a killed ``energybench run`` leaves
  no orphan training on, holding a GPU and skewing the next attempt's energy;
- a run that failed with an out-of-memory error gets the peak memory seen.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import warnings

PARENT_POLL_S = 1.0
ORPHAN_EXIT_CODE = 70


def exit_with_parent(poll_s: float = PARENT_POLL_S) -> None:
    """Leave at once when the parent goes (we are re-parented); never outlive the runner."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(ORPHAN_EXIT_CODE)

    threading.Thread(target=watch, name="energybench-parent-watch", daemon=True).start()


def apply_thread_limit(env=os.environ) -> int | None:
    """torch.set_num_threads(ENERGYBENCH_NUM_THREADS) when the executor set it; returns the count applied."""
    value = env.get("ENERGYBENCH_NUM_THREADS")
    if not value:
        return None
    import torch

    torch.set_num_threads(int(value))
    return int(value)


def _gpu_peaks() -> tuple[dict, dict]:
    """Peak CUDA memory of this process's current device, or None plus a reason."""
    figures, reasons = {}, {}
    names = ("peak_gpu_mem_bytes", "peak_gpu_reserved_bytes", "gpu_total_bytes")
    try:
        import torch

        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            raise RuntimeError("CUDA was not used by this run")
        dev = torch.cuda.current_device()
        figures = {"device": f"cuda:{dev}", "peak_gpu_mem_bytes": torch.cuda.max_memory_allocated(dev),
                   "peak_gpu_reserved_bytes": torch.cuda.max_memory_reserved(dev),
                   "gpu_total_bytes": torch.cuda.get_device_properties(dev).total_memory}
    except Exception as exc:  # noqa: BLE001
        figures = {"device": None, **{n: None for n in names}}
        reasons = {n: str(exc) for n in names}
    return figures, reasons


def _peak_rss_bytes() -> int | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
    except Exception:  # noqa: BLE001
        return None


def annotate_oom(result):
    """A failed run whose error is an out-of-memory gets ``oom`` (peaks seen) and says "out of memory" first.

    The GPU peak is torch's since its last reset (the Meter resets it at each window start), i.e. the
    peak of the window that failed.
    """
    if result.status != "failed" or "out of memory" not in (result.error or "").lower():
        return result
    gpu, reasons = _gpu_peaks()
    oom = {"kind": "gpu" if gpu.get("device") else "host", **gpu, "peak_rss_bytes": _peak_rss_bytes(),
           "reasons": reasons}
    if oom["peak_gpu_mem_bytes"] is not None:
        gib = 2 ** 30
        peak = (f"peak {oom['peak_gpu_mem_bytes'] / gib:.2f} GiB allocated ({oom['peak_gpu_reserved_bytes'] / gib:.2f}"
                f" GiB reserved) of {oom['gpu_total_bytes'] / gib:.2f} GiB on {oom['device']}")
    else:
        peak = (f"peak resident memory {oom['peak_rss_bytes'] / 2**20:.0f} MiB" if oom["peak_rss_bytes"]
                else "peak unknown")
    error = result.error if result.error.lower().startswith("out of memory") else f"out of memory: {result.error}"
    return result.model_copy(update={"error": f"{error} ({peak})", "oom": oom})


def forked_main(spec_path: str, result_path: str, out, env: dict) -> None:
    """A run forked by the fork server (executors/forkserver.py): ``main`` in an already warm process.

    out: the write end of the pipe the parent reads, made this process's stdout and stderr;
    env: the variables the executor gives the run (thread caps), applied before anything reads them.
    """
    import io

    fd = out.fileno()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    out.close()
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), encoding="utf-8", errors="replace", line_buffering=True)
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), encoding="utf-8", errors="replace", line_buffering=True)
    os.environ.update(env)
    code = main([spec_path, result_path])
    if code:
        sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, result_path = argv
    from energybench.run.isolate import drop_cwd_from_path

    drop_cwd_from_path()  # a forked run inherits the server's path; a fresh one was started with -P
    # The parent stops runs (SIGTERM) on Ctrl-C; a run that saw SIGINT itself would end in a traceback and a
    # "failed" row instead of staying pending for the resume.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent()
    warnings.filterwarnings("ignore", category=FutureWarning)
    threads = apply_thread_limit()
    from energybench.run.execute import execute
    from energybench.run.plan import RunSpec

    spec = RunSpec.model_validate_json(open(spec_path, encoding="utf-8").read())
    result = annotate_oom(execute(spec, log=lambda msg: print(msg, flush=True)))
    if threads is not None:
        result.environment["torch_num_threads"] = threads
    tmp = result_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(result.model_dump(mode="json")))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
