"""Regression gate: does a candidate's suite cost more than a baseline's?

Two kinds of figures are judged differently.

Deterministic figures (``mem_model_bytes`` and its parts, FLOPs, parameter
counts) are the same on every machine, so runs are matched by their
configuration hash (``run_id``) and compared exactly: an increase beyond the
metric's tolerance (default 0) is a regression.

Noisy figures (energy, CUDA peaks, step time, latency) vary from run to
run. Runs are grouped by (backbone, task, method, configuration without the
seed), so the seeds are the samples. With enough samples on both sides a
one-sided Mann–Whitney U test asks whether the candidate exceeds the
baseline *plus the threshold* with confidence (p < alpha); only then is it a
regression. With too few samples for the test to ever reach alpha (one seed
per side, or two against two), the means are compared against the threshold
and the verdict says it is low-confidence.

Each side is a run directory, a results.jsonl, or a baseline file written by
``energybench baseline export`` (schema-versioned JSON of the ok rows).
Thresholds come from ``--threshold NAME=VALUE`` or a
``[tool.energybench.compare]`` table in the nearest pyproject.toml;
``VALUE`` is ``5%`` (relative to the baseline) or a plain number (absolute,
in the metric's unit).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from energybench import __version__
from energybench.results import RESULTS_FILE, SCHEMA_VERSION, ResultsFileError, RunResult, latest_by_run, read_rows

BASELINE_FORMAT = "energybench-baseline"
BASELINE_SCHEMA_VERSION = 1
DEFAULT_ALPHA = 0.05
DEFAULT_NOISY_THRESHOLD = "10%"
REGRESSING_VERDICTS = ("regression", "missing in candidate", "failed in candidate")


class CompareInputError(ValueError):
    """A side cannot be read or is not what compare expects (exit code 2)."""


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricDef:
    """A comparable figure: where it sits in a row, and whether it is deterministic."""

    name: str
    section: str  # "row", "accounting", or a window name
    field: str
    deterministic: bool

    def value(self, row: dict) -> tuple[float | None, str | None]:
        """The figure of ``row`` and, when it is null, the reason recorded for it."""
        if self.section == "row":
            v = row.get(self.field)
            return (float(v) if v is not None else None), (None if v is not None else "not recorded")
        figs = row.get("accounting") if self.section == "accounting" else (row.get("windows") or {}).get(self.section)
        figs = figs or {}
        v = figs.get(self.field)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v):
            return float(v), None
        reason = (figs.get("reasons") or {}).get(self.field) or "not recorded by the run"
        return None, reason


def _m(name: str, section: str, fld: str | None = None, det: bool = False) -> MetricDef:
    return MetricDef(name, section, fld or name, det)


METRICS: dict[str, MetricDef] = {m.name: m for m in (
    _m("mem_model_bytes", "accounting", det=True),
    _m("mem_params_bytes", "accounting", det=True),
    _m("mem_grads_bytes", "accounting", det=True),
    _m("mem_optimizer_bytes", "accounting", det=True),
    _m("mem_activations_bytes", "accounting", det=True),
    _m("train_flops", "accounting", det=True),
    _m("infer_flops", "accounting", det=True),
    _m("trainable_params", "row", det=True),
    _m("total_params", "row", det=True),
    _m("gpu_energy_kwh", "train"),
    _m("gpu_energy_power_kwh", "train"),
    _m("gpu_energy_read_kwh", "train"),
    _m("cpu_energy_kwh", "train"),
    _m("ram_energy_kwh", "train"),
    _m("peak_gpu_mem_bytes", "train"),
    _m("peak_rss_bytes", "train"),
    _m("step_time_s", "train"),
    _m("infer_latency_ms_p50", "inference"),
    _m("infer_latency_ms_p99", "inference"),
    _m("infer_peak_gpu_mem_bytes", "inference", "peak_gpu_mem_bytes"),
)}
GROUPS: dict[str, list[str]] = {
    "deterministic": [n for n, m in METRICS.items() if m.deterministic],
    "noisy": [n for n, m in METRICS.items() if not m.deterministic],
    "energy": [n for n in METRICS if n.endswith("_energy_kwh") or "_energy_" in n],
    "latency": ["infer_latency_ms_p50", "infer_latency_ms_p99"],
    "peak_memory": ["peak_gpu_mem_bytes", "infer_peak_gpu_mem_bytes", "peak_rss_bytes"],
    "memory": [n for n in METRICS if n.startswith("mem_")],
    "flops": ["train_flops", "infer_flops"],
}
GROUPS["all"] = list(METRICS)


def resolve_metrics(spec: str | Iterable[str]) -> list[MetricDef]:
    """``deterministic``, ``noisy``, ``all``, a group or metric names, comma-separated."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[str] = []
    for n in names:
        if n in GROUPS:
            out += GROUPS[n]
        elif n in METRICS:
            out.append(n)
        else:
            raise CompareInputError(f"--metrics: unknown metric or group {n!r}; groups: {', '.join(GROUPS)}; "
                                    f"metrics: {', '.join(METRICS)}")
    return [METRICS[n] for n in dict.fromkeys(out)]


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Threshold:
    """How much increase is tolerated: ``value`` × baseline when ``relative``, else ``value`` in the metric's unit."""

    value: float
    relative: bool

    @classmethod
    def parse(cls, text: str | float | int, where: str) -> "Threshold":
        s = str(text).strip()
        try:
            if s.endswith("%"):
                v, rel = float(s[:-1]) / 100.0, True
            else:
                v, rel = float(s), False
        except ValueError:
            raise CompareInputError(f"{where}: threshold {text!r} is not a number or a percentage like 5%") from None
        if v < 0 or math.isnan(v):
            raise CompareInputError(f"{where}: threshold {text!r} must be zero or positive")
        return cls(v, rel)

    def allowance(self, baseline: float) -> float:
        return self.value * abs(baseline) if self.relative else self.value

    def __str__(self) -> str:
        return f"{100 * self.value:g}%" if self.relative else f"{self.value:g}"


def _expand_names(name: str, where: str) -> list[str]:
    if name in GROUPS:
        return GROUPS[name]
    if name in METRICS:
        return [name]
    raise CompareInputError(f"{where}: unknown metric or group {name!r}; groups: {', '.join(GROUPS)}; "
                            f"metrics: {', '.join(METRICS)}")


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` (default: the current directory)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file():
            return d / "pyproject.toml"
    return None


def pyproject_settings(path: Path | None) -> dict[str, Any]:
    """The ``[tool.energybench.compare]`` table of ``path`` (empty if none)."""
    if path is None:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CompareInputError(f"{path}: cannot read it as TOML ({exc})") from None
    table = data.get("tool", {}).get("energybench", {}).get("compare", {})
    if not isinstance(table, dict):
        raise CompareInputError(f"{path}: [tool.energybench.compare] must be a table")
    return table


def resolve_thresholds(cli: list[str], config: dict[str, Any], config_path: Path | None) -> dict[str, Threshold]:
    """Per-metric thresholds: defaults (deterministic 0, noisy 10%) ← pyproject ← command line;
    within each, a group's value applies first and a single metric's overrides it."""
    out = {n: Threshold(0.0, False) if m.deterministic else Threshold.parse(DEFAULT_NOISY_THRESHOLD, "default")
           for n, m in METRICS.items()}
    layers: list[list[tuple[str, Any, str]]] = [
        [(k, v, f"{config_path} [tool.energybench.compare] {k}") for k, v in config.items()
         if k not in ("alpha", "metrics")],
        [],
    ]
    for item in cli:
        if "=" not in item:
            raise CompareInputError(f"--threshold {item!r}: expected NAME=VALUE, e.g. energy=5% or mem_model_bytes=0")
        k, v = item.split("=", 1)
        layers[1].append((k.strip(), v, f"--threshold {item}"))
    for layer in layers:
        for is_group in (True, False):
            for k, v, where in layer:
                if (k in GROUPS) == is_group:
                    t = Threshold.parse(v, where)
                    for n in _expand_names(k, where):
                        out[n] = t
    return out


# --------------------------------------------------------------------------- inputs


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
        rows = read_rows(p)
    except ResultsFileError as exc:
        raise CompareInputError(f"{exc} — a line in the middle of the file is damaged; fix or remove it") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CompareInputError(f"{p}: cannot read ({exc})") from None
    lines = [i for i, raw in enumerate(p.read_bytes().split(b"\n"), 1) if raw.strip()]
    return [_validate(r, f"{p}:{line}") for r, line in zip(rows, lines)]


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


BASELINE_DROP = ("method_info", "traceback_tail", "warnings")


def baseline_document(rows: list[dict], source: str, git_commit: str | None = None) -> dict:
    """The baseline file's content: schema-versioned, the latest ok row of each run, sorted for stable diffs."""
    ok = [r for r in latest_by_run(rows).values() if r.get("status") == "ok"]
    ok.sort(key=lambda r: (r["backbone"], r["task"], r["method"], r["seed"], r["run_id"]))
    return {"format": BASELINE_FORMAT, "schema_version": BASELINE_SCHEMA_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "energybench": __version__, "source": source, "git_commit": git_commit,
            "rows": [_baseline_row(r) for r in ok]}


def _baseline_row(r: dict) -> dict:
    """A row without what compare never reads (training history, tracebacks) or a committed file should not
    carry (the host name)."""
    out = {k: v for k, v in r.items() if k not in BASELINE_DROP}
    if isinstance(out.get("environment"), dict):
        out["environment"] = {k: v for k, v in out["environment"].items() if k != "host"}
    return out


def export_baseline(run_dir: str | Path, out: str | Path) -> tuple[Path, dict]:
    """Write a baseline file from ``run_dir``; returns its path and content."""
    from energybench.history import git_commit

    side = load_side(run_dir)
    doc = baseline_document(side.rows, str(run_dir), git_commit())
    if not doc["rows"]:
        raise CompareInputError(f"{run_dir}: no finished (ok) run to put in a baseline")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out, doc


# --------------------------------------------------------------------------- comparison


@dataclass
class Finding:
    """One row of the verdict table."""

    backbone: str
    task: str
    method: str
    seeds: str
    metric: str
    baseline: float | None
    candidate: float | None
    change_pct: float | None
    verdict: str  # same · within threshold · improvement · regression · inconclusive · missing in candidate · new
    confidence: str  # exact · p=… (Mann–Whitney U, n=…) · low (…)
    threshold: str
    note: str = ""


@dataclass
class Outcome:
    baseline: Side
    candidate: Side
    metrics: list[str]
    thresholds: dict[str, str]
    alpha: float
    findings: list[Finding] = field(default_factory=list)
    added: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    not_compared: dict[str, str] = field(default_factory=dict)  # "metric" → why (null on both sides)

    fail_on_missing: bool = False

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict in REGRESSING_VERDICTS]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions) or (self.fail_on_missing and bool(self.missing))


def _change_pct(b: float | None, c: float | None) -> float | None:
    if b is None or c is None or b == 0:
        return None
    return 100.0 * (c - b) / abs(b)


def exact_verdict(b: float, c: float, t: Threshold) -> str:
    diff, allow = c - b, t.allowance(b)
    if diff == 0:
        return "same"
    if diff > allow:
        return "regression"
    if diff < 0 and -diff > allow:
        return "improvement"
    return "within threshold"


def min_one_sided_p(n1: int, n2: int) -> float:
    """The smallest p an exact one-sided Mann–Whitney U test can give with these sample sizes."""
    return 1.0 / math.comb(n1 + n2, n1)


def noisy_verdict(base: list[float], cand: list[float], t: Threshold, alpha: float) -> tuple[str, str]:
    """(verdict, confidence) for two samples of a noisy metric. See the module docstring."""
    from scipy.stats import mannwhitneyu

    mb, mc = sum(base) / len(base), sum(cand) / len(cand)
    allow = t.allowance(mb)
    if len(base) < 2 or len(cand) < 2 or min_one_sided_p(len(base), len(cand)) >= alpha:
        why = ("one sample per side" if len(base) == 1 and len(cand) == 1
               else f"{len(base)} vs {len(cand)} samples cannot reach p < {alpha:g}")
        v = exact_verdict(mb, mc, t)
        return v, f"low confidence ({why}; means against the threshold)"
    up = [x + t.allowance(x) for x in base]
    down = [x - t.allowance(x) for x in base]
    p_up = float(mannwhitneyu(cand, up, alternative="greater").pvalue)
    p_down = float(mannwhitneyu(cand, down, alternative="less").pvalue)
    n = f"n={len(base)}/{len(cand)}"
    if p_up < alpha:
        return "regression", f"p={p_up:.3g} (Mann–Whitney U, one-sided, {n})"
    if p_down < alpha:
        return "improvement", f"p={p_down:.3g} (Mann–Whitney U, one-sided, {n})"
    if base == cand:
        return "same", f"identical samples ({n})"
    if mc - mb > allow:
        return "inconclusive", f"mean exceeds the threshold but p={p_up:.3g} ≥ {alpha:g} ({n})"
    return "within threshold", f"p={p_up:.3g} for exceeding it ({n})"


def _seed_config_key(row: dict) -> tuple:
    """(backbone, task, method, the configuration without its seed): rows that differ only by seed."""
    cfg = {k: v for k, v in (row.get("config") or {}).items() if k != "seed"}
    return row["backbone"], row["task"], row["method"], json.dumps(cfg, sort_keys=True, default=str)


def _run_brief(r: dict) -> dict:
    return {k: r.get(k) for k in ("backbone", "task", "method", "seed", "run_id", "status", "error")}


def compare(baseline: Side, candidate: Side, metrics: list[MetricDef], thresholds: dict[str, Threshold],
            alpha: float = DEFAULT_ALPHA, fail_on_missing: bool = False) -> Outcome:
    """Match the two sides' runs and judge every requested metric; with ``fail_on_missing`` a baseline run
    the candidate lacks counts as a regression (a gate should not pass because a method stopped running)."""
    if not 0 < alpha < 1:
        raise CompareInputError(f"--alpha {alpha}: must be between 0 and 1")
    b_all, c_all = latest_by_run(baseline.rows), latest_by_run(candidate.rows)
    b = {k: r for k, r in b_all.items() if r["status"] == "ok"}
    out = Outcome(baseline, candidate, [m.name for m in metrics], {m.name: str(thresholds[m.name]) for m in metrics},
                  alpha, fail_on_missing=fail_on_missing)
    if not b:
        raise CompareInputError(f"{baseline.label}: no finished (ok) run to compare against")
    if not c_all:
        raise CompareInputError(f"{candidate.label}: no runs")
    common = [k for k in b if k in c_all]
    if not common:
        raise CompareInputError(
            f"no run of {candidate.label} matches one of {baseline.label} (runs are matched by the hash of their "
            "configuration: did the suite change? then refresh the baseline with `energybench baseline export`)")
    out.missing = [_run_brief(b[k]) for k in b if k not in c_all]
    out.added = [_run_brief(r) for k, r in c_all.items() if k not in b]
    out.failed = [_run_brief(c_all[k]) for k in common if c_all[k]["status"] != "ok"]
    for r in out.failed:
        out.findings.append(Finding(r["backbone"], r["task"], r["method"], str(r["seed"]), "status", None, None, None,
                                    "failed in candidate", "exact", "-", str(r.get("error") or "")))
    both_ok = [k for k in common if c_all[k]["status"] == "ok"]
    null_both: dict[str, set[str]] = {}

    for m in (m for m in metrics if m.deterministic):
        for k in both_ok:
            br, cr = b[k], c_all[k]
            (bv, bwhy), (cv, cwhy) = m.value(br), m.value(cr)
            f = Finding(br["backbone"], br["task"], br["method"], str(br["seed"]), m.name, bv, cv,
                        _change_pct(bv, cv), "", "exact", str(thresholds[m.name]))
            if bv is None and cv is None:
                null_both.setdefault(m.name, set()).add(cwhy or "null")
                continue
            if cv is None:
                f.verdict, f.note = "missing in candidate", cwhy or ""
            elif bv is None:
                f.verdict, f.note = "new", f"baseline: {bwhy}"
            else:
                f.verdict = exact_verdict(bv, cv, thresholds[m.name])
            out.findings.append(f)

    noisy = [m for m in metrics if not m.deterministic]
    if noisy:
        groups_b: dict[tuple, list[dict]] = {}
        groups_c: dict[tuple, list[dict]] = {}
        for r in b.values():
            groups_b.setdefault(_seed_config_key(r), []).append(r)
        for r in c_all.values():
            if r["status"] == "ok":
                groups_c.setdefault(_seed_config_key(r), []).append(r)
        for key in (k for k in groups_b if k in groups_c):
            gb, gc = groups_b[key], groups_c[key]
            seeds = (f"{','.join(str(s) for s in sorted({r['seed'] for r in gb}))} vs "
                     f"{','.join(str(s) for s in sorted({r['seed'] for r in gc}))}")
            for m in noisy:
                bvals = [(v, why) for v, why in map(m.value, gb)]
                cvals = [(v, why) for v, why in map(m.value, gc)]
                bs, cs = [v for v, _ in bvals if v is not None], [v for v, _ in cvals if v is not None]
                if not bs and not cs:
                    null_both.setdefault(m.name, set()).update(w for _, w in cvals if w)
                    continue
                mb = sum(bs) / len(bs) if bs else None
                mc = sum(cs) / len(cs) if cs else None
                f = Finding(key[0], key[1], key[2], seeds, m.name, mb, mc, _change_pct(mb, mc), "", "",
                            str(thresholds[m.name]))
                if not bs or not cs:
                    f.verdict = "not comparable"
                    f.note = "; ".join({w for _, w in (cvals if not cs else bvals) if w})
                    f.note = ("candidate: " if not cs else "baseline: ") + f.note
                else:
                    f.verdict, f.confidence = noisy_verdict(bs, cs, thresholds[m.name], alpha)
                out.findings.append(f)
    out.not_compared = {k: "; ".join(sorted(v)) for k, v in null_both.items()}
    out.findings.sort(key=lambda f: (f.backbone, f.task, f.method, f.seeds, f.metric))
    return out


# --------------------------------------------------------------------------- output


def _num(v: float | None, metric: str) -> str:
    if v is None:
        return "—"
    if metric in METRICS and METRICS[metric].deterministic and float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.4g}"


def _pct(p: float | None) -> str:
    return "—" if p is None else f"{p:+.2f}%"


def _by_threshold(o: Outcome) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in o.metrics:
        out.setdefault(o.thresholds[m], []).append(m)
    return out


def render_markdown(o: Outcome, show_all: bool = False) -> str:
    head = [f"## energybench compare: {'REGRESSION' if o.regressed else 'OK'}", "",
            f"Baseline: {o.baseline.label} ({o.baseline.kind}, {len(latest_by_run(o.baseline.rows))} runs) · "
            f"candidate: {o.candidate.label} ({o.candidate.kind}, {len(latest_by_run(o.candidate.rows))} runs)  ",
            "Thresholds (tolerated increase): " + "; ".join(
                f"{t} for {', '.join(ms)}" for t, ms in _by_threshold(o).items()) + "  "]
    if any(not METRICS[m].deterministic for m in o.metrics):
        head.append(f"Noisy metrics: seeds are the samples; one-sided Mann–Whitney U at alpha {o.alpha:g}; with too "
                    "few seeds the means are compared with the threshold (low confidence).")
    head.append("")
    shown = [f for f in o.findings if show_all or f.verdict != "same"]
    hidden = len(o.findings) - len(shown)
    counts: dict[str, int] = {}
    for f in o.findings:
        counts[f.verdict] = counts.get(f.verdict, 0) + 1
    head.append("Verdicts: " + (", ".join(f"{v} {n}" for v, n in sorted(counts.items())) or "none") + ".")
    head.append("")
    if shown:
        cols = ["Backbone", "Task", "Method", "Seeds", "Metric", "Baseline", "Candidate", "Change", "Verdict",
                "Confidence", "Note"]
        head += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for f in shown:
            verdict = f"**{f.verdict}**" if f.verdict in REGRESSING_VERDICTS else f.verdict
            cells = [f.backbone, f.task, f.method, f.seeds, f.metric, _num(f.baseline, f.metric),
                     _num(f.candidate, f.metric), _pct(f.change_pct), verdict, f.confidence, f.note]
            head.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        head.append("")
    if hidden:
        head += [f"{hidden} comparison(s) unchanged (--all lists them).", ""]
    missing_title = "Missing from the candidate" + (" — a regression (--fail-on-missing)" if o.fail_on_missing else "")
    for title, runs in ((missing_title, o.missing), ("Added in the candidate", o.added)):
        if runs:
            head += [f"### {title} ({len(runs)})", "", "| Backbone | Task | Method | Seed | Run id |",
                     "|---|---|---|---|---|"]
            head += [f"| {r['backbone']} | {r['task']} | {r['method']} | {r['seed']} | {r['run_id']} |" for r in runs]
            head.append("")
    if o.not_compared:
        head += ["### Not compared (null on both sides)", ""]
        head += [f"- {m}: {why}" for m, why in sorted(o.not_compared.items())]
        head.append("")
    return "\n".join(head).rstrip() + "\n"


def render_csv(o: Outcome) -> str:
    buf = io.StringIO()
    names = list(Finding.__dataclass_fields__)
    w = csv.DictWriter(buf, fieldnames=names)
    w.writeheader()
    for f in o.findings:
        w.writerow(asdict(f))
    for kind, runs in (("missing in candidate", o.missing), ("added in candidate", o.added)):
        for r in runs:
            w.writerow({"backbone": r["backbone"], "task": r["task"], "method": r["method"], "seeds": r["seed"],
                        "metric": "run", "verdict": kind, "note": r["run_id"]})
    return buf.getvalue()


def render_json(o: Outcome) -> str:
    return json.dumps({"regressed": o.regressed, "baseline": o.baseline.label, "candidate": o.candidate.label,
                       "alpha": o.alpha, "thresholds": o.thresholds, "findings": [asdict(f) for f in o.findings],
                       "missing": o.missing, "added": o.added, "failed": o.failed, "not_compared": o.not_compared},
                      indent=1)


RENDERERS = {"md": render_markdown, "csv": render_csv, "json": render_json}
