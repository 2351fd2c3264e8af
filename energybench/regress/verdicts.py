"""The gate's verdicts: does a candidate's suite cost more than a baseline's?

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

import json
import math
from dataclasses import dataclass, field

from energybench.regress.metrics import MetricDef
from energybench.regress.sides import CompareInputError, Side
from energybench.regress.thresholds import DEFAULT_ALPHA, Threshold
from energybench.results import latest_by_run

REGRESSING_VERDICTS = ("regression", "missing in candidate", "failed in candidate")


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
