"""Mutation score of the core modules: a benchmark that prints figures, not a CI gate.

Cosmic Ray (``pip install -e '.[mutation]'``) mutates one core module at a time (operators swapped, comparisons
flipped, constants changed, statements removed …) and runs the tests that cover that module against each
mutant; a mutant the tests do not notice *survived*. Per module it prints killed / survived / timeout.

Bounded for a shared 2-core machine: each module runs only its own test files; only mutants inside the
module's core functions count (the rest of the file is marked skipped); at most ``--cap`` of those are drawn
with a fixed seed (``--seed``); and the whole run has a time budget (``--budget-s``), shared out over the modules in
proportion to how long one run of their tests takes (so each gets about as many mutants judged); a module's
mutants left when its share is spent are reported as not run. Cosmic Ray edits the source file in place while a mutant is
tested, so it works on a copy of the checkout (``--work-dir``/tree, imported through PYTHONPATH ahead of the
editable install), never on the checkout itself; bytecode caching is off for the tests (a mutant of the same
size written within the same second could otherwise run from a stale .pyc).

    python benchmarks/mutation_score.py                       # every module, default bounds
    python benchmarks/mutation_score.py --only splits metrics  # some modules
    python benchmarks/mutation_score.py --write reports/mutation_score.md

Surviving mutants are listed with their diff; those known to be equivalent (no test could tell them from
the original) carry the reason from ``EQUIVALENT`` below, keyed by the file and the removed/added line.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COSMIC_RAY = str(Path(sys.executable).parent / "cosmic-ray")


@dataclass(frozen=True)
class Target:
    name: str
    path: str
    scope: tuple[str, ...]  # functions, classes or Class.method whose bodies count
    tests: tuple[str, ...]
    select: str | None = None  # pytest -k expression


TARGETS = (
    Target("splits", "energybench/tasks/splits.py", ("read_protocol_split", "_shuffled"),
           ("tests/test_tasks_protocol.py",)),
    Target("glue loading", "energybench/tasks/glue.py", ("_read_tsv", "load_glue_tsv", "load_glue_hub"),
           ("tests/test_tasks_protocol.py",)),
    Target("metrics", "energybench/tasks/metrics.py", ("compute_metrics", "_finite"),
           ("tests/test_tasks_metrics.py",)),
    Target("power integral", "energybench/measure/gpu_integration.py", ("DeviceWindow.add", "device_figures"),
           ("tests/test_measure_integration.py", "tests/test_measure_nvml.py")),
    Target("READ estimate", "energybench/measure/read_estimate.py",
           ("ReadBusyTime", "put_read_figures", "put_read_error"),
           ("tests/test_measure_integration.py", "tests/test_measure_nvml.py")),
    Target("report aggregation", "energybench/report/tables.py", ("per_seed", "summarize", "with_pct"),
           ("tests/test_report_cells.py", "tests/test_report_tables.py", "tests/test_report.py",
            "tests/test_regress_verdicts.py")),
    Target("latest row per run", "energybench/results.py", ("latest_by_run", "finished_run_ids"),
           ("tests/test_regress_verdicts.py",)),
    Target("compare verdicts", "energybench/regress/verdicts.py", ("exact_verdict", "noisy_verdict", "compare"),
           ("tests/test_regress_verdicts.py", "tests/test_compare.py"), "not console_script"),
    Target("training loop", "energybench/train/loop.py", ("fit", "planned_steps", "_snapshot", "_restore"),
           ("tests/test_train_loop.py",)),
    Target("runner skip/retry", "energybench/run/runner.py", ("run_suite",),
           ("tests/test_runner_retry.py",), "not malformed"),
)

# Survivors no test can kill, keyed by (file, removed line, added line), both stripped.
_SPAN_GUARD = "if length > 0 and span < COVERAGE_MIN * length:"
_SPAN_GUARD_WHY = ("the guard only keeps a zero-length window out, and for length 0 `span < 0.9 · 0` is false "
                   "anyway (span ≥ 0), so moving the bound to 0 or below changes nothing")
EQUIVALENT: dict[tuple[str, str, str], str] = {
    ("energybench/measure/gpu_integration.py", _SPAN_GUARD, _SPAN_GUARD.replace("> 0", "> -1")): _SPAN_GUARD_WHY,
    ("energybench/measure/gpu_integration.py", _SPAN_GUARD, _SPAN_GUARD.replace("> 0", ">= 0")): _SPAN_GUARD_WHY,
    ("energybench/report/tables.py", "if len(values) < n_total:", "if len(values) != n_total:"):
        "values holds one entry per seed of g, so len(values) ≤ n_total always and != is <",
    ("energybench/results.py",
     'return {rid for rid, r in latest_by_run(read_rows(path)).items() if r.get("status") == "ok"}',
     'return {rid for rid, r in latest_by_run(read_rows(path)).items() if r.get("status") >= "ok"}'):
        'status is "ok" or "failed" (RunResult: Literal), and "failed" < "ok", so >= "ok" selects the same rows',
    ("energybench/report/tables.py",
     'out[seed] = sum(per_task) if combine == "sum" else sum(per_task) / len(per_task)',
     'out[seed] = sum(per_task) if combine >= "sum" else sum(per_task) / len(per_task)'):
        'combine is "sum" or "mean" (Combine: Literal), and "mean" < "sum", so >= "sum" picks the same branch',
    ("energybench/report/tables.py", "cell.std = float(s.std(ddof=1)) if len(s) > 1 else None",
     "cell.std = float(s.std(ddof=1)) if len(s) != 1 else None"):
        "s is built only when values is non-empty, so len(s) >= 1 and != 1 is > 1",
    ("energybench/train/loop.py",
     "if not stop and (not cfg.eval_every_steps or res.steps >= total_steps) and running:",
     "if not stop and (not cfg.eval_every_steps or res.steps == total_steps) and running:"):
        "the step loop breaks as soon as res.steps reaches total_steps, so it never exceeds it and >= is ==",
    ("energybench/run/runner.py", 'write_file_atomic(out / "suite.json", suite.model_dump_json(indent=2))',
     'write_file_atomic(out / "suite.json", suite.model_dump_json(indent= 1))'):
        "only the indentation of suite.json changes; its content is the same JSON, which is all its readers parse",
}


def _scope_lines(path: Path, scope: tuple[str, ...]) -> set[int]:
    """Line numbers of the scoped definitions' bodies, docstrings excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            nodes[node.name] = node
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        nodes[f"{node.name}.{sub.name}"] = sub
    lines: set[int] = set()
    for name in scope:
        if name not in nodes:
            raise SystemExit(f"{path}: no definition {name!r} to mutate (update TARGETS)")
        node = nodes[name]
        lines.update(range(node.lineno, node.end_lineno + 1))
        for sub in ast.walk(node):  # docstrings: not code
            body = getattr(sub, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(getattr(body[0], "value", None), ast.Constant)
                    and isinstance(body[0].value.value, str)):
                lines.difference_update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def make_tree(dest: Path) -> dict[str, str]:
    """A copy of the checkout's files (tracked and untracked, not ignored) to mutate, and the environment
    that makes Python import it instead of the editable install: the worktree itself is never edited."""
    import shutil

    if dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(dest), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run([sys.executable, "-c", "import energybench.tasks.splits as m; print(m.__file__)"],
                           cwd=dest, env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(dest.resolve()):
        raise SystemExit(f"the copy in {dest} is not what Python imports ({where}); refusing to mutate")
    return env


def _annotation_spans(path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where type annotations are, when the module never evaluates them (``from __future__ import annotations``):
    a mutant there is equivalent by construction, so it is not run."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lazy = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
               for n in tree.body)
    if not lazy:
        return []
    spans = []
    for node in ast.walk(tree):
        anns = []
        if isinstance(node, ast.arg) and node.annotation is not None:
            anns.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            anns.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            anns.append(node.annotation)
        spans += [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in anns]
    return spans


def _in_spans(pos: tuple[int, int], spans) -> bool:
    return any(a <= tuple(pos) < b for a, b in spans)


def _test_command(t: Target) -> list[str]:
    cmd = ["env", "PYTHONDONTWRITEBYTECODE=1", sys.executable, "-m", "pytest", "-x", "-q", "--no-header",
           "-p", "no:cacheprovider", "-W", "ignore", *t.tests]
    if t.select:
        cmd += ["-k", t.select]
    return cmd


@dataclass
class Score:
    target: Target
    generated: int = 0
    in_scope: int = 0
    annotations: int = 0
    sampled: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    incompetent: int = 0
    not_run: int = 0
    baseline_s: float = 0.0
    budget_s: float = 0.0
    wall_s: float = 0.0
    work: Path | None = None
    chosen: set = field(default_factory=set)
    survivors: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def judged(self) -> int:
        return self.killed + self.timeout + self.survived

    @property
    def equivalent(self) -> int:
        return sum(1 for d in self.survivors if _explain(self.target.path, d))

    def pct(self, exclude_equivalent: bool = False) -> float | None:
        n = self.judged - (self.equivalent if exclude_equivalent else 0)
        return None if n <= 0 else 100.0 * (self.killed + self.timeout) / n


def _changed_lines(diff: str) -> tuple[str, str]:
    minus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    minus, plus = [ln for ln in minus if ln], [ln for ln in plus if ln]  # a file's last line shows a blank pair
    return " / ".join(minus), " / ".join(plus)


def _explain(path: str, diff: str) -> str | None:
    return EQUIVALENT.get((path, *_changed_lines(diff)))


def prepare_target(t: Target, tree: Path, env: dict[str, str], work: Path, cap: int, seed: int, echo) -> Score:
    """Baseline test run, Cosmic Ray session, and the draw of mutants to run (the others marked skipped)."""
    import toml  # a dependency of cosmic-ray
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    score = Score(t, work=work)
    src = tree / t.path
    work.mkdir(parents=True, exist_ok=True)
    cfg, db = work / "config.toml", work / "session.sqlite"
    db.unlink(missing_ok=True)
    t0 = time.perf_counter()
    base = subprocess.run(_test_command(t), cwd=tree, env=env, capture_output=True, text=True)
    score.baseline_s = time.perf_counter() - t0
    if base.returncode != 0:
        score.error = f"tests fail on the unmutated code:\n{base.stdout[-2000:]}"
        return score
    timeout = round(min(3 * score.baseline_s + 15, 240.0), 1)
    cfg.write_text(toml.dumps({"cosmic-ray": {
        "module-path": t.path, "timeout": timeout, "excluded-modules": [],
        "test-command": shlex.join(_test_command(t)), "distributor": {"name": "local"}}}), encoding="utf-8")
    subprocess.run([COSMIC_RAY, "init", str(cfg), str(db)], cwd=tree, env=env, check=True, capture_output=True)
    lines, spans = _scope_lines(src, t.scope), _annotation_spans(src)
    with use_db(str(db), WorkDB.Mode.open) as wdb:
        items = list(wdb.pending_work_items)
        score.generated = len(items)
        in_function = [w for w in items if all(m.start_pos[0] in lines for m in w.mutations)]
        in_scope = [w for w in in_function if not any(_in_spans(m.start_pos, spans) for m in w.mutations)]
        score.annotations = len(in_function) - len(in_scope)
        score.in_scope = len(in_scope)
        chosen = set(w.job_id for w in random.Random(seed).sample(in_scope, min(cap, len(in_scope))))
        score.sampled, score.chosen = len(chosen), chosen
        for w in items:
            if w.job_id not in chosen:
                why = ("not sampled" if w in in_scope else "in a type annotation" if w in in_function
                       else "outside the module's core functions")
                wdb.set_result(w.job_id, WorkResult(output=why, worker_outcome=WorkerOutcome.SKIPPED))
    echo(f"{t.name}: {score.generated} mutants in {t.path}, {score.in_scope} in {', '.join(t.scope)} "
         f"(+{score.annotations} in annotations), {score.sampled} drawn (baseline tests {score.baseline_s:.1f} s, "
         f"timeout {timeout} s each)")
    return score


def exec_target(score: Score, tree: Path, env: dict[str, str], budget_s: float, echo) -> Score:
    """Run the drawn mutants for at most ``budget_s``; restore the source; count the outcomes."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    t, chosen = score.target, score.chosen
    src = tree / t.path
    original = src.read_bytes()
    cfg, db = score.work / "config.toml", score.work / "session.sqlite"
    score.budget_s = budget_s
    t1 = time.perf_counter()
    proc = subprocess.Popen([COSMIC_RAY, "exec", str(cfg), str(db)], cwd=tree, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        import psutil

        kids = psutil.Process(proc.pid).children(recursive=True)  # the test run has a session of its own
        for p in [psutil.Process(proc.pid), *kids]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait()
        echo(f"  {t.name}: time budget of {budget_s:.0f} s spent; the remaining mutants are not run")
    finally:
        if src.read_bytes() != original:
            src.write_bytes(original)
    score.wall_s = time.perf_counter() - t1
    with use_db(str(db), WorkDB.Mode.open) as wdb:
        for job_id, r in wdb.results:
            if job_id not in chosen:
                continue
            if r.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if r.test_outcome == TestOutcome.KILLED:
                if (r.output or "").strip() == "timeout":
                    score.timeout += 1
                else:
                    score.killed += 1
            elif r.test_outcome == TestOutcome.SURVIVED:
                score.survived += 1
                score.survivors.append(r.diff or "")
            else:
                score.incompetent += 1
        score.not_run = score.sampled - (score.judged + score.incompetent)
    return score


def _fmt_pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f} %"


def render(scores: list[Score], argv: list[str], total_s: float) -> str:
    import cosmic_ray

    version = getattr(cosmic_ray, "__version__", None)
    if version is None:
        from importlib.metadata import version as _v
        version = _v("cosmic-ray")
    out = ["# Mutation score of the core modules", "",
           f"Produced by `python benchmarks/mutation_score.py {' '.join(argv)}` (Cosmic Ray {version}, "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {total_s / 60:.1f} min on a shared 2-core machine).",
           "", "Each module is mutated alone and tested only by the files listed; only mutants inside the listed "
           "functions count (not those inside type annotations, which these modules never evaluate: "
           "`from __future__ import annotations`), at most `--cap` of them drawn with a fixed seed, run until the module's "
           "time budget is spent (the rest: *not run*). A *timeout* (tests past the per-mutant limit, e.g. an endless "
           "loop) counts as caught. Score = (killed + timeout) / (killed + timeout + "
           "survived); incompetent mutants (code that cannot even import) are left out.", "",
           "| module | functions | tests (one run) | mutants (file / in scope / drawn) | killed | timeout | survived | "
           "incompetent | not run | time / share | score | score without equivalent |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    tot = Score(Target("total", "", (), ()))
    for s in scores:
        t = s.target
        if s.error:
            out.append(f"| {t.name} | | | | | | | | | | error | {s.error.splitlines()[0]} |")
            continue
        out.append(f"| {t.name} (`{t.path}`) | {', '.join(t.scope)} | {', '.join(Path(x).name for x in t.tests)}"
                   f"{f' -k {t.select!r}' if t.select else ''} ({s.baseline_s:.0f} s) | {s.generated} / {s.in_scope} / "
                   f"{s.sampled} | {s.killed} | {s.timeout} | {s.survived} | {s.incompetent} | {s.not_run} | "
                   f"{s.wall_s:.0f} / {s.budget_s:.0f} s | {_fmt_pct(s.pct())} | "
                   f"{_fmt_pct(s.pct(True))} |")
        for k in ("generated", "in_scope", "sampled", "killed", "timeout", "survived", "incompetent", "not_run"):
            setattr(tot, k, getattr(tot, k) + getattr(s, k))
    equivalent = sum(s.equivalent for s in scores)
    n = tot.judged
    pct = 100.0 * (tot.killed + tot.timeout) / n if n else None
    pct_eq = 100.0 * (tot.killed + tot.timeout) / (n - equivalent) if n - equivalent > 0 else None
    out.append(f"| **all** | | | {tot.generated} / {tot.in_scope} / {tot.sampled} | {tot.killed} | {tot.timeout} | "
               f"{tot.survived} | {tot.incompetent} | {tot.not_run} | | **{_fmt_pct(pct)}** | **{_fmt_pct(pct_eq)}** |")
    out += ["", "## Surviving mutants", ""]
    any_survivor = False
    for s in scores:
        for d in s.survivors:
            any_survivor = True
            why = _explain(s.target.path, d)
            out += [f"**{s.target.name}** — " + (f"equivalent: {why}" if why else "not explained: a test gap"),
                    "", "```diff", d.strip(), "```", ""]
    if not any_survivor:
        out.append("None.")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="module names (default: all): " + ", ".join(t.name for t in TARGETS))
    p.add_argument("--cap", type=int, default=25, help="mutants drawn per module at most (default 25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw of mutants (default 0)")
    p.add_argument("--budget-s", type=float, default=1140.0,
                   help="wall time for everything (default 1140 s = 19 min), split over the modules by the cost "
                        "of one run of their tests")
    p.add_argument("--min-module-s", type=float, default=40.0, help="wall time any module gets at least (40 s)")
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "mutation"), help="where sessions are kept")
    p.add_argument("--write", help="also write the markdown report to this file")
    args = p.parse_args(argv)
    targets = [t for t in TARGETS if not args.only or t.name in args.only or t.name.split()[0] in args.only]
    if not targets:
        p.error(f"--only: no module named {args.only}")
    t0 = time.perf_counter()
    work = Path(args.work_dir).resolve()
    tree = work / "tree"
    env = make_tree(tree)
    echo = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    scores = [prepare_target(t, tree, env, work / t.name.replace(" ", "_").replace("/", "_"), args.cap, args.seed,
                             echo) for t in targets]
    # Each module's share of the time is proportional to what one run of its tests costs, so every module gets
    # about as many mutants judged, whichever tests are slow.
    # A baseline that stalled (once here: 300 s for tests that take 10) is capped at 4× the median, so one
    # slow moment does not hand a module most of the time.
    left = max(60.0, args.budget_s - (time.perf_counter() - t0))
    ok = sorted(s.baseline_s for s in scores if not s.error) or [1.0]
    cap_s = 4 * ok[len(ok) // 2]
    cost = {id(s): min(s.baseline_s, cap_s) for s in scores}
    total = sum(cost[id(s)] for s in scores if not s.error) or 1.0
    for s in scores:
        if s.error:
            echo(f"  {s.target.name}: {s.error.splitlines()[0]}")
            continue
        exec_target(s, tree, env, max(args.min_module_s, left * cost[id(s)] / total), echo)
        echo(f"  {s.target.name}: killed {s.killed}, survived {s.survived}, timeout {s.timeout}, "
             f"incompetent {s.incompetent}, not run {s.not_run} ({s.wall_s:.0f} s of {s.budget_s:.0f} s)")
    text = render(scores, argv, time.perf_counter() - t0)
    print(text)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
