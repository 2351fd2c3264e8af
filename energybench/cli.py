"""Command line: run · estimate · report · methods · compare · baseline export · history add/show.

Exit codes: 0 success, 1 a run failed (run) or a regression (compare),
2 bad input (a suite, a file, an argument).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import warnings
from importlib import resources
from pathlib import Path

BUILTIN_SUITES = ("quickstart", "glue_t5", "ci")  # ci: the wheel check in .ci/run runs it by name


def _err(msg: str) -> int:
    print(f"energybench: error: {msg}", file=sys.stderr)
    return 2


def _install_plain_warnings() -> None:
    """energybench's own warnings (a torn last line of an interrupted run) as one plain line, not Python's
    "file:line: UserWarning: ..." with a source line; other packages' warnings keep their format."""
    from energybench.results import TornLineWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, TornLineWarning):
            print(f"energybench: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def resolve_suite_path(arg: str | None) -> Path:
    """A suite file path, or the name of a suite shipped with the package."""
    if arg is None:
        arg = "quickstart"
    p = Path(arg)
    if p.exists() or arg not in BUILTIN_SUITES:
        return p
    return Path(str(resources.files("energybench.suites") / f"{arg}.yaml"))


def resolve_output_dir(output_dir: str, suite_path: Path) -> Path:
    """A suite's relative ``output_dir`` is relative to the suite file's folder (not to wherever the command
    runs), except for the built-in suites shipped in the package, whose runs go under the current directory."""
    out = Path(output_dir).expanduser()
    if out.is_absolute():
        return out
    builtin = Path(str(resources.files("energybench.suites"))).resolve()
    folder = suite_path.resolve().parent
    if folder == builtin:
        return out
    return folder / out


def cmd_run(args) -> int:
    from energybench.suite_yaml import SuiteError, prescreen

    path = resolve_suite_path(args.suite)
    try:
        prescreen(path)  # size, encoding, YAML bombs, duplicate keys: refused before torch is imported
    except SuiteError as exc:
        return _err(f"invalid suite\n{exc}")

    from energybench.report.build import write_report
    from energybench.results import ResultsFileError, ResultsWriteError, finished_run_ids
    from energybench.run.executors import ExecutorError, resolve_settings
    from energybench.run.preflight import PreflightError, preflight
    from energybench.run.runner import OutputDirError, run_suite, suite_executor_settings
    from energybench.run.stopping import StopRequested, StopSignals
    from energybench.suite import SuiteError, load_suite, with_data_dir

    try:
        suite = load_suite(path)
        if args.data_dir:
            suite = with_data_dir(suite, args.data_dir)
        preflight(suite, str(path))
    except SuiteError as exc:
        return _err(f"invalid suite\n{exc}")
    except PreflightError as exc:
        return _err(f"the suite cannot run on this machine (nothing was started)\n{exc}")
    try:
        settings = resolve_settings(suite_executor_settings(suite), dict(
            kind=args.executor, jobs=args.jobs, gpus=args.gpus, runs_per_gpu=args.runs_per_gpu,
            threads_per_run=args.threads_per_run, ray_address=args.ray_address, max_retries=args.max_retries))
    except ExecutorError as exc:
        return _err(str(exc))
    out = Path(args.output_dir) if args.output_dir else resolve_output_dir(suite.output_dir, path)
    print(f"suite {suite.name}: {len(suite.backbones)} backbone(s) × {len(suite.tasks)} task(s) × "
          f"{len(suite.methods)} method(s) × {len(suite.seeds)} seed(s) → {out}  [{settings.concurrency_hint}]")
    try:
        with StopSignals() as stop:
            summary = run_suite(suite, out, settings=settings, stop=stop)
    except StopRequested as exc:
        s = exc.summary
        saved = (s.skipped + s.ok) if s is not None else _count_saved(finished_run_ids, out)
        total = s.total if s is not None else "?"
        print(f"\nstopped: {saved} of {total} runs saved in {out}; run the same command to resume", file=sys.stderr)
        return exc.exit_code
    except (OutputDirError, ResultsFileError, ResultsWriteError) as exc:
        return _err(f"{exc}\n(the grid stopped; rows already in results.jsonl are kept — fix this and run the same "
                    "command to resume)")
    except ExecutorError as exc:
        return _err(f"{exc}\n(no run was started)")
    print(f"{summary.ok} finished, {summary.failed} failed, {summary.skipped} skipped (already done) "
          f"in {summary.wall_s:.1f} s")
    for f in summary.failures:
        print(f"  failed: {f}")
    if summary.trials:
        print(f"learning-rate search: {summary.trials} trial run(s) this time, {len(summary.trial_failures)} failed "
              "(failed trials count as tried; they do not fail the suite)")
        for f in summary.trial_failures:
            print(f"  trial failed: {f}")
    try:
        files = write_report([out], out, formats=("md", "csv", "html", "png"))
    except (ResultsWriteError, ResultsFileError, ValueError) as exc:
        return _err(f"the runs are saved in {out}, but the report could not be written: {exc}")
    print(f"report: {files[0]}")
    return 1 if summary.failed else 0


def _count_saved(finished_run_ids, out: Path) -> int | str:
    try:
        return len(finished_run_ids(out / "results.jsonl"))
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


def cmd_report(args) -> int:
    from energybench.report.build import FORMATS, write_report
    from energybench.results import ResultsFileError, ResultsWriteError

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    unknown = set(formats) - set(FORMATS)
    if unknown:
        return _err(f"--format: unknown format(s) {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}")
    try:
        files = write_report(args.run_dirs, args.output_dir, formats, baseline_method=args.baseline_method)
    except (FileNotFoundError, ResultsFileError, ResultsWriteError, ValueError) as exc:
        return _err(str(exc))
    for f in files:
        print(f)
    return 0


def cmd_estimate(args) -> int:
    from energybench.run.estimate import EstimateError, estimate_suite, parse_size, render
    from energybench.suite import SuiteError, load_suite

    try:
        suite = load_suite(resolve_suite_path(args.suite))
        gpu = parse_size(args.gpu_memory) if args.gpu_memory else None
        rows = estimate_suite(suite, batch_size=args.batch_size, gpu_memory=gpu, source_length=args.source_length,
                              target_length=args.target_length, semantics=args.semantics, jobs=args.jobs)
        text = render(rows, args.format)
    except SuiteError as exc:
        return _err(f"invalid suite\n{exc}")
    except EstimateError as exc:
        return _err(str(exc))
    sys.stdout.write(text)
    return 1 if any(r.get("error") for r in rows) else 0


def cmd_doctor(args) -> int:
    from energybench.doctor import doctor_report

    print(doctor_report())
    return 0


def cmd_methods(args) -> int:
    from energybench.registry import implementer, load_method, method_names

    width = max(len(n) for n in method_names())
    for name in method_names():
        try:
            cls = load_method(name)
            print(f"{name:<{width}}  {cls.summary}  [{cls.paper}; {implementer(name)}]")
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            print(f"{name:<{width}}  (cannot be loaded: {type(exc).__name__}: {exc})")
    return 0


def cmd_compare(args) -> int:
    from energybench.regress.metrics import resolve_metrics
    from energybench.regress.render import RENDERERS, render_markdown
    from energybench.regress.sides import CompareInputError, load_side
    from energybench.regress.thresholds import (
        DEFAULT_ALPHA,
        find_pyproject,
        pyproject_settings,
        resolve_thresholds,
    )
    from energybench.regress.verdicts import compare

    try:
        pyproject = find_pyproject()
        config = pyproject_settings(pyproject)
        metrics = resolve_metrics(args.metrics or config.get("metrics") or "all")
        thresholds = resolve_thresholds(args.threshold or [], config, pyproject)
        alpha = args.alpha if args.alpha is not None else float(config.get("alpha", DEFAULT_ALPHA))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            baseline, candidate = load_side(args.baseline), load_side(args.candidate)
        for w in caught:  # e.g. a torn last line (an interrupted run): said once, plainly, not as a traceback
            print(f"energybench: warning: {w.message}", file=sys.stderr)
        outcome = compare(baseline, candidate, metrics, thresholds, alpha, args.fail_on_missing)
    except (CompareInputError, ValueError) as exc:
        return _err(str(exc))
    text = render_markdown(outcome, args.all) if args.format == "md" else RENDERERS[args.format](outcome)
    if args.output:
        from energybench.results import ResultsWriteError, write_file_atomic

        try:
            write_file_atomic(args.output, text)
        except ResultsWriteError as exc:
            return _err(str(exc))
    else:
        sys.stdout.write(text)
    return 1 if outcome.regressed else 0


def cmd_baseline_export(args) -> int:
    from energybench.regress.baseline import export_baseline
    from energybench.regress.sides import CompareInputError
    from energybench.results import ResultsWriteError

    try:
        path, doc = export_baseline(args.run_dir, args.output)
    except (CompareInputError, ResultsWriteError) as exc:
        return _err(str(exc))
    print(f"{path}: {len(doc['rows'])} finished run(s) from {args.run_dir} "
          f"(commit {doc['git_commit'] or 'unknown'})")
    return 0


def cmd_history_add(args) -> int:
    from energybench.regress.git import git_commit, git_dirty
    from energybench.regress.history import HistoryError, add_run_dir, connect, default_db_path
    from energybench.results import ResultsFileError

    db = args.db or default_db_path()
    try:
        conn = connect(db)
        summary = add_run_dir(conn, args.run_dir, git_commit(), git_dirty())
    except (HistoryError, FileNotFoundError, ResultsFileError) as exc:
        return _err(str(exc))
    if summary.addition_id is None:
        print(f"{db}: nothing new — all {summary.known_rows} row(s) of {args.run_dir} are already recorded")
    else:
        print(f"{db}: addition #{summary.addition_id}: {summary.new_rows} new row(s), {summary.known_rows} already "
              f"recorded; commit {summary.git_commit or 'unknown (not in a git work tree)'}")
    return 0


def cmd_history_show(args) -> int:
    from energybench.regress.history import (
        HistoryError,
        connect,
        default_db_path,
        resolve_metric,
        trend,
        trend_markdown,
        trend_png,
    )

    db = args.db or default_db_path()
    if not Path(db).exists():
        return _err(f"{db}: no history yet (record a run directory with `energybench history add RUN_DIR`)")
    try:
        conn = connect(db)
        metric = resolve_metric(conn, args.metric)
        points = trend(conn, metric, args.method, args.backbone, args.task)
    except HistoryError as exc:
        return _err(str(exc))
    sys.stdout.write(trend_markdown(points, metric))
    if args.png:
        if not points:
            return _err(f"--png: nothing to plot for {metric} with this selection")
        print(f"plot: {trend_png(points, metric, args.png)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="energybench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a suite (default: the offline quickstart) and write its report")
    r.add_argument("suite", nargs="?", help="suite YAML file, or a built-in name: " + ", ".join(BUILTIN_SUITES))
    r.add_argument("--output-dir", help="override the suite's output_dir")
    r.add_argument("--data-dir", metavar="DIR", help="read every GLUE task of the suite from this local glue_data "
                   "folder (SST-2/train.tsv, SST-2/dev.tsv, …) instead of the hub")
    ex = r.add_argument_group("where runs execute (override the suite's executor: block)")
    ex.add_argument("--executor", choices=("local", "ray"), help="local child processes (default) or Ray tasks")
    ex.add_argument("--jobs", type=int, metavar="N", help="local: CPU-only runs at once (one torch thread each); "
                    "ray without --ray-address: CPUs of the local Ray instance")
    ex.add_argument("--gpus", metavar="LIST", help="local: 'all' or GPU indices such as 0,1,2,3 (nvidia-smi's); one "
                    "run per GPU at once, each pinned with CUDA_VISIBLE_DEVICES")
    ex.add_argument("--runs-per-gpu", type=int, metavar="N", help="share each GPU between N runs (their GPU energy "
                    "is then marked shared, not their own)")
    ex.add_argument("--threads-per-run", type=int, metavar="N", help="torch/OpenMP threads per run (default: 1 for "
                    "CPU-only runs, so scores do not depend on --jobs; cores ÷ runs at once for GPU runs)")
    ex.add_argument("--ray-address", metavar="ADDR", help="ray: 'auto' (the cluster this machine joined), "
                    "ray://HEAD:10001 or HEAD:6379 (default: start a local Ray instance)")
    ex.add_argument("--max-retries", type=int, metavar="N", help="ray: resubmit a run whose task was lost with its "
                    "node up to N times (default 2)")
    r.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="write READ-style tables (md, csv), figures (png) and a self-contained "
                         "report.html from one or more run directories")
    rep.add_argument("run_dirs", nargs="+", help="run directories (each holding results.jsonl); combined in one report")
    rep.add_argument("--format", default="md,csv,html,png",
                     help="comma-separated: md, csv, html, png (default: md,csv,html,png)")
    rep.add_argument("--baseline-method", default="full_ft",
                     help="method the '%% of' columns are relative to (default: full_ft)")
    rep.add_argument("-o", "--output-dir", help="where to write (default: the first run directory)")
    rep.set_defaults(func=cmd_report)
    est = sub.add_parser("estimate", help="memory by part and FLOPs of every (backbone, method) of a suite, from "
                         "configs alone (fake tensors: no training, no weights downloaded)")
    est.add_argument("suite", nargs="?", help="suite YAML file, or a built-in name: " + ", ".join(BUILTIN_SUITES))
    est.add_argument("--format", choices=("md", "csv", "json"), default="md")
    est.add_argument("--batch-size", type=int, metavar="N", help="override every method's training batch size")
    est.add_argument("--gpu-memory", metavar="SIZE", help="say whether mem_model_bytes fits: 80GB (10^9), 80GiB (2^30)")
    est.add_argument("--source-length", type=int, metavar="N", help="source tokens (default: max_source_length)")
    est.add_argument("--target-length", type=int, metavar="N", help="label tokens (default: max_target_length)")
    est.add_argument("--semantics", choices=("cuda", "cpu"), help="saved-tensor semantics (default: the suite's "
                     "measure.accounting_semantics, cuda)")
    est.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: one per CPU core)")
    est.set_defaults(func=cmd_estimate)
    m = sub.add_parser("methods", help="list the registered fine-tuning methods")
    m.set_defaults(func=cmd_methods)
    d = sub.add_parser("doctor", help="print what this machine can measure (NVML, RAPL, CodeCarbon, CUDA) and how")
    d.set_defaults(func=cmd_doctor)
    cmp_ = sub.add_parser("compare", help="regression gate: compare a candidate's runs with a baseline's "
                          "(exit 0 ok, 1 regression, 2 bad input)")
    cmp_.add_argument("baseline", help="run directory, results.jsonl or baseline file (energybench baseline export)")
    cmp_.add_argument("candidate", help="run directory, results.jsonl or baseline file")
    cmp_.add_argument("--metrics", help="deterministic | noisy | all | groups (energy, latency, peak_memory, memory, "
                      "flops) or metric names, comma-separated (default: all, or pyproject's metrics)")
    cmp_.add_argument("--threshold", action="append", metavar="NAME=VALUE",
                      help="tolerated increase per metric or group: 5%% (relative) or a number (absolute); "
                      "repeatable. Defaults: deterministic 0, noisy 10%%; [tool.energybench.compare] in "
                      "pyproject.toml also sets them")
    cmp_.add_argument("--alpha", type=float, help="significance level of the noisy-metric test (default 0.05)")
    cmp_.add_argument("--format", choices=("md", "csv", "json"), default="md")
    cmp_.add_argument("--fail-on-missing", action="store_true",
                      help="a baseline run missing from the candidate is a regression (exit 1); for CI gates")
    cmp_.add_argument("--all", action="store_true", help="list unchanged comparisons too (md)")
    cmp_.add_argument("-o", "--output", help="write the table here instead of stdout")
    cmp_.set_defaults(func=cmd_compare)
    base = sub.add_parser("baseline", help="baseline files for `energybench compare`")
    base_sub = base.add_subparsers(dest="baseline_command", required=True)
    bexp = base_sub.add_parser("export", help="write a schema-versioned baseline file (finished runs only)")
    bexp.add_argument("run_dir", help="run directory (or its results.jsonl)")
    bexp.add_argument("-o", "--output", required=True, help="e.g. reports/baselines/quickstart.json")
    bexp.set_defaults(func=cmd_baseline_export)
    hist = sub.add_parser("history", help="record finished suites in a SQLite history and show trends")
    hist_sub = hist.add_subparsers(dest="history_command", required=True)
    hadd = hist_sub.add_parser("add", help="record a run directory's rows with the current git commit (idempotent)")
    hadd.add_argument("run_dir")
    hadd.add_argument("--db", help="history database (default: energybench's user data directory)")
    hadd.set_defaults(func=cmd_history_add)
    hshow = hist_sub.add_parser("show", help="print a figure's trend over recorded additions; optionally plot it")
    hshow.add_argument("--metric", required=True, help="e.g. mem_model_bytes, score, train.wall_s, gpu_energy_kwh")
    hshow.add_argument("--method")
    hshow.add_argument("--backbone")
    hshow.add_argument("--task")
    hshow.add_argument("--png", help="also write the trend as a PNG here")
    hshow.add_argument("--db", help="history database (default: energybench's user data directory)")
    hshow.set_defaults(func=cmd_history_show)
    return p


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)
    _install_plain_warnings()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    code = args.func(args)
    if argv is None:  # the program, about to exit: its last collections would walk torch's heap for ~1.2 s
        gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
