"""The gate's outcome as Markdown (for people and CI logs), CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict

from energybench.regress.metrics import METRICS
from energybench.regress.verdicts import REGRESSING_VERDICTS, Finding, Outcome
from energybench.results import latest_by_run


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
