"""Command line: run · report · methods (and the measurement and comparison commands).

Exit codes: 0 success, 1 a run failed (run) or a regression (compare),
2 bad input (a suite, a file, an argument).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from importlib import resources
from pathlib import Path

BUILTIN_SUITES = ("quickstart", "glue_t5")


def _err(msg: str) -> int:
    print(f"energybench: error: {msg}", file=sys.stderr)
    return 2


def resolve_suite_path(arg: str | None) -> Path:
    """A suite file path, or the name of a suite shipped with the package."""
    if arg is None:
        arg = "quickstart"
    p = Path(arg)
    if p.exists() or arg not in BUILTIN_SUITES:
        return p
    return Path(str(resources.files("energybench.suites") / f"{arg}.yaml"))


def cmd_run(args) -> int:
    from energybench.preflight import PreflightError, preflight
    from energybench.report import write_report
    from energybench.runner import OutputDirLockedError, run_suite
    from energybench.suite import SuiteError, load_suite

    path = resolve_suite_path(args.suite)
    try:
        suite = load_suite(path)
        preflight(suite, str(path))
    except SuiteError as exc:
        return _err(f"invalid suite\n{exc}")
    except PreflightError as exc:
        return _err(f"the suite cannot run on this machine (nothing was started)\n{exc}")
    out = Path(args.output_dir or suite.output_dir)
    print(f"suite {suite.name}: {len(suite.backbones)} backbone(s) × {len(suite.tasks)} task(s) × "
          f"{len(suite.methods)} method(s) × {len(suite.seeds)} seed(s) → {out}")
    try:
        summary = run_suite(suite, out)
    except OutputDirLockedError as exc:
        return _err(str(exc))
    print(f"{summary.ok} finished, {summary.failed} failed, {summary.skipped} skipped (already done) "
          f"in {summary.wall_s:.1f} s")
    for f in summary.failures:
        print(f"  failed: {f}")
    files = write_report([out], out)
    print(f"report: {files[0]}")
    return 1 if summary.failed else 0


def cmd_report(args) -> int:
    from energybench.report import write_report
    from energybench.results import ResultsFileError

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    unknown = set(formats) - {"md", "csv"}
    if unknown:
        return _err(f"--format: unknown format(s) {', '.join(sorted(unknown))}; choose from md, csv")
    try:
        files = write_report(args.run_dirs, args.output_dir, formats)
    except (FileNotFoundError, ResultsFileError, ValueError) as exc:
        return _err(str(exc))
    for f in files:
        print(f)
    return 0


def cmd_methods(args) -> int:
    from energybench.registry import load_method, method_names

    width = max(len(n) for n in method_names())
    for name in method_names():
        try:
            cls = load_method(name)
            print(f"{name:<{width}}  {cls.summary}  [{cls.paper}; {cls.implemented_by}]")
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            print(f"{name:<{width}}  (cannot be loaded: {type(exc).__name__}: {exc})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="energybench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a suite (default: the offline quickstart) and write its report")
    r.add_argument("suite", nargs="?", help="suite YAML file, or a built-in name: " + ", ".join(BUILTIN_SUITES))
    r.add_argument("--output-dir", help="override the suite's output_dir")
    r.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="write report.md / report.csv from one or more run directories")
    rep.add_argument("run_dirs", nargs="+", help="run directories (each holding results.jsonl)")
    rep.add_argument("--format", default="md,csv", help="comma-separated: md, csv (default: md,csv)")
    rep.add_argument("-o", "--output-dir", help="where to write (default: the first run directory)")
    rep.set_defaults(func=cmd_report)
    m = sub.add_parser("methods", help="list the registered fine-tuning methods")
    m.set_defaults(func=cmd_methods)
    return p


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
