"""What does an executor cost? Wall time of one grid serially, with two local jobs, and on Ray with two CPUs.

The grid is the quickstart suite (tiny random T5, synthetic tasks, CPU), or
a subset of it chosen with --tasks / --methods / --seeds / --max-steps (the
output says which). Each mode runs the whole grid into a fresh directory
through :func:`energybench.run.runner.run_suite`, exactly as ``energybench run``
does:

- ``local-1``: the default executor, one run at a time;
- ``local-2``: ``--jobs 2``, two runs at once;
- ``ray-2``:   ``--executor ray`` on a local Ray instance with 2 CPUs, one
  run per CPU (so ``local-2`` and ``ray-2`` use the same cores the same way
  and differ only in the executor).

Every run gets --threads torch threads (default 1, what ``energybench run``
gives CPU-only runs) in every mode, so all modes compute the same numbers:
the real part checks that each mode's report tables (report.csv,
efficiency.csv) equal local-1's apart from the timing, energy, RSS and
latency columns (the "same report tables" acceptance of ``--jobs``). On a
machine shared with other work, torch's multi-threaded kernels can stall for
many seconds when one of their threads is descheduled, which would swamp the
executor's own cost.

Two parts (--part):

- ``real``: the grid's real runs. This is what a user waits for, but on a
  machine shared with other work the wall times carry that work's noise.
- ``null``: the same grid's runs replaced by child processes that only sleep
  --null-s seconds and report a minimal row, through the very same executors
  (child process, placement, streaming, appends). Sleeping needs no CPU, so
  other load barely moves it, and whatever exceeds runs × sleep ÷ slots is
  the executor's own cost.

Ray's wall time is given with and without starting the Ray instance (which
a long-lived cluster pays once, not per grid). The figures that matter are
the ratios ``local-2 / local-1`` (what two jobs buy) and ``ray-2 / local-2``
(what Ray adds over the local executor on the same cores; goal < 1.10).
With --repeats > 1 the two parallel modes alternate ABBA and the median is
reported. Other processes on the machine add noise; the load average is
printed before and after.

    python benchmarks/executor_scaling.py [--part real,null] [--tasks synth-sst2] [--seeds 0] \
        [--max-steps 50] [--null-s 1] [--repeats 1] [--threads 1] [--out reports/executor_scaling.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import pandas as pd
import torch

from energybench.report.build import write_report
from energybench.results import read_rows
from energybench.run.executors import ExecutorSettings, LocalExecutor, make_executor
from energybench.run.executors.process import run_child, run_in_child
from energybench.run.executors.ray_executor import RayExecutor
from energybench.run.plan import expand
from energybench.run.runner import run_suite
from energybench.suite import load_suite


def _grid(args):
    suite = load_suite(Path(str(resources.files("energybench.suites") / "quickstart.yaml")))
    update, subset = {}, []
    if args.tasks:
        update["tasks"] = [t for t in suite.tasks if t.name in args.tasks.split(",")]
        subset.append(f"tasks {args.tasks}")
    if args.methods:
        update["methods"] = [m for m in suite.methods if m.display in args.methods.split(",")]
        subset.append(f"methods {args.methods}")
    if args.seeds:
        update["seeds"] = [int(s) for s in args.seeds.split(",")]
        subset.append(f"seeds {args.seeds}")
    if args.max_steps:
        update["training"] = suite.training.model_copy(update={"max_steps": args.max_steps})
        subset.append(f"max_steps {args.max_steps}")
    suite = suite.model_copy(update=update)
    what = "the full quickstart grid" if not subset else "a quickstart subset: " + ", ".join(subset)
    return suite, what


NULL_CHILD = """
import json, sys, time
spec = json.load(open(sys.argv[1]))
time.sleep(SLEEP_S)
b, m = spec["backbone"], spec["method"]
row = {"run_id": spec["run_id"], "suite": spec["suite"], "backbone": b.get("label") or b["name"],
       "task": spec["task"]["name"], "method": m.get("label") or m["name"], "method_name": m["name"],
       "seed": spec["seed"], "config": {}, "status": "ok"}
json.dump(row, open(sys.argv[2], "w"))
"""


def null_command(sleep_s: float) -> list[str]:
    """``python -c CODE`` that run_child completes with SPEC RESULT: a child that sleeps and reports."""
    return [sys.executable, "-c", NULL_CHILD.replace("SLEEP_S", repr(float(sleep_s)))]


def null_task(command: list[str], payload: dict, env: dict) -> dict:
    """Ray task body for null runs (pickled by value: this module is __main__)."""
    return run_child(payload["spec_json"], payload["row_base"], lambda line: None, env=env, command=command)


class _TimedPrepare:
    """An executor whose prepare() (for Ray: starting the instance) is timed apart from the runs."""

    def __init__(self, inner):
        self.inner, self.name, self.prepare_s = inner, inner.name, 0.0

    def prepare(self, suite, n):
        t0 = time.perf_counter()
        notes = self.inner.prepare(suite, n)
        self.prepare_s = time.perf_counter() - t0
        return notes

    def run(self, specs, events):
        return self.inner.run(specs, events)

    def close(self):
        self.inner.close()

    @property
    def slots(self):
        return getattr(self.inner, "slots", [None, None])


def fresh_fork_server() -> None:
    """Stop this process's fork server, so that each mode pays its start-up as each ``energybench run`` does."""
    from multiprocessing import forkserver as mp_forkserver

    stop = getattr(getattr(mp_forkserver, "_forkserver", None), "_stop", None)  # private; absent: modes share it
    if stop is not None:
        stop()


def run_mode(mode: str, suite, root: Path, threads: int, null_s: float | None = None) -> dict:
    fresh_fork_server()
    settings = {"local-1": ExecutorSettings(threads_per_run=threads),
                "local-2": ExecutorSettings(jobs=2, threads_per_run=threads),
                "ray-2": ExecutorSettings(kind="ray", jobs=2, threads_per_run=threads)}[mode]
    if null_s is None:
        inner = make_executor(settings)
    elif mode == "ray-2":
        from functools import partial

        inner = RayExecutor(settings, task_fn=partial(null_task, null_command(null_s)))
    else:
        command = null_command(null_s)
        inner = LocalExecutor(settings, run_fn=lambda spec, relay, **kw: run_in_child(spec, relay, command=command,
                                                                                     **kw))
    if mode == "ray-2":
        inner.log_to_driver = False
    ex = _TimedPrepare(inner)
    out = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=root))
    summary = run_suite(suite, out, executor=ex, settings=settings, echo=lambda m: None)
    rows = read_rows(out)
    busy = sum(sum(w.get("wall_s") or 0 for w in r.get("windows", {}).values()) for r in rows)
    return {"mode": mode, "wall_s": summary.wall_s, "prepare_s": ex.prepare_s, "ok": summary.ok,
            "failed": summary.failed, "windows_s": busy, "out": out}


# Report columns that measure time, or what is derived from time (energy) or from the process (RSS).
NOISY = re.compile(r"time|wall|energy|rss|latency|step_s|peak_gpu|_note$")


def report_tables(out: Path) -> dict[str, pd.DataFrame]:
    """report.csv (Table 1) and efficiency.csv (Table 3) of a run directory, without their timing columns."""
    write_report([out], out / "report", formats=("csv",))
    tables = {}
    for name in ("report.csv", "efficiency.csv"):
        df = pd.read_csv(out / "report" / name)
        tables[name] = df[[c for c in df.columns if not NOISY.search(c)]]
    return tables


def same_tables(results: dict[str, list[dict]]) -> list[str]:
    """Whether every mode's report tables equal local-1's apart from timing columns; the differences if not."""
    ref = report_tables(results["local-1"][0]["out"])
    kept = ", ".join(c for c in ref["report.csv"].columns if c not in ("backbone", "method")) + "; " + ", ".join(
        c for c in ref["efficiency.csv"].columns if c not in ("backbone", "method"))
    lines, diffs = [], []
    for mode, rs in results.items():
        for r in rs[1:] if mode == "local-1" else rs:
            other = report_tables(r["out"])
            for name, df in ref.items():
                if not df.equals(other[name]):
                    cmp = df.compare(other[name]) if df.shape == other[name].shape else None
                    diffs.append(f"  {mode}: {name} differs" + (f":\n{cmp.to_string()}" if cmp is not None else
                                                                 f" in shape {df.shape} vs {other[name].shape}"))
    verdict = "identical" if not diffs else "DIFFERENT"
    lines.append(f"  report tables (report.csv, efficiency.csv) apart from timing, energy, RSS and latency columns: "
                 f"{verdict} across local-1, local-2 and ray-2")
    lines.append(f"  (columns compared: {kept})")
    return lines + diffs


def measure(suite, args, null_s: float | None) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {"local-1": [], "local-2": [], "ray-2": []}
    with tempfile.TemporaryDirectory(prefix="executor-scaling-") as tmp:
        root = Path(tmp)
        results["local-1"].append(run_mode("local-1", suite, root, args.threads, null_s))
        for i in range(args.repeats):
            order = ("local-2", "ray-2") if i % 2 == 0 else ("ray-2", "local-2")
            for mode in order:
                results[mode].append(run_mode(mode, suite, root, args.threads, null_s))
        tables = same_tables(results) if null_s is None else []
    return results, tables


def summarize(results: dict[str, list[dict]], n: int, null_s: float | None) -> list[str]:
    med = {m: statistics.median(r["wall_s"] for r in rs) for m, rs in results.items()}
    ray_start = statistics.median(r["prepare_s"] for r in results["ray-2"])
    ray_runs = med["ray-2"] - ray_start
    local2_prep = statistics.median(r["prepare_s"] for r in results["local-2"])
    lines = []
    for m, rs in results.items():
        r = rs[0]
        extra = (f"ideal {n * null_s / (1 if m == 'local-1' else 2):6.1f} s" if null_s is not None else
                 f"sum of the runs' own window time {statistics.median(x['windows_s'] for x in rs):7.1f} s")
        lines.append(f"  {m:8s} wall {med[m]:7.1f} s   ok {r['ok']}, failed {r['failed']}   {extra}")
    lines += [
        f"  ray-2 without starting the Ray instance: {ray_runs:.1f} s (start-up {ray_start:.1f} s, paid once per "
        f"cluster, not per grid); local-2 set-up {local2_prep:.2f} s",
        f"  local-2 / local-1 = {med['local-2'] / med['local-1']:.3f}   (two jobs vs one)",
        f"  ray-2 / local-2   = {med['ray-2'] / med['local-2']:.3f}   including Ray start-up",
        f"  ray-2 / local-2   = {ray_runs / (med['local-2'] - local2_prep):.3f}   excluding Ray start-up "
        "(executor overhead on the same cores; goal < 1.10)",
    ]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", default="real,null", help="real, null or both (comma-separated; default both)")
    p.add_argument("--tasks", help="comma-separated subset of the quickstart's tasks (real part)")
    p.add_argument("--methods", help="comma-separated subset of its methods (labels; real part)")
    p.add_argument("--seeds", help="comma-separated seeds (quickstart: 0,1; real part)")
    p.add_argument("--max-steps", type=int, help="override training.max_steps (quickstart: 200; real part)")
    p.add_argument("--null-s", type=float, default=1.0, help="seconds each null run sleeps (null part: the full "
                   "quickstart grid)")
    p.add_argument("--repeats", type=int, default=1, help="ABBA repeats of the two parallel modes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run, every mode (default 1)")
    p.add_argument("--out", help="also write the output here")
    args = p.parse_args(argv)
    parts = {x.strip() for x in args.part.split(",")}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    load0 = os.getloadavg()[0]
    body = []
    if "real" in parts:
        suite, what = _grid(args)
        n = len(expand(suite))
        res, tables = measure(suite, args, None)
        body += [f"real runs: {what} ({n} runs)", *summarize(res, n, None), *tables]
    if "null" in parts:
        full, _ = _grid(argparse.Namespace(tasks=None, methods=None, seeds=None, max_steps=None))
        n = len(expand(full))
        res, _ = measure(full, args, args.null_s)
        body += [f"null runs: the full quickstart grid's {n} runs, each a child process that sleeps {args.null_s:g} s "
                 "(executor cost only)", *summarize(res, n, args.null_s)]
    load1 = os.getloadavg()[0]
    head = [
        "executor scaling: wall time of one grid, serially (local-1), with --jobs 2 (local-2) and on a local Ray "
        "instance with 2 CPUs (ray-2)",
        f"machine: {platform.node()} · {len(os.sched_getaffinity(0))} CPUs · torch {torch.__version__} · "
        f"python {platform.python_version()} · 1-min load average {load0:.1f} before, {load1:.1f} after "
        "(other processes add noise)",
        f"repeats: local-1 ×1, local-2 and ray-2 ×{args.repeats} (ABBA), medians; {args.threads} torch thread(s) "
        "per run in every mode",
    ]
    text = "\n".join(head + body) + "\n"
    sys.stdout.write(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
