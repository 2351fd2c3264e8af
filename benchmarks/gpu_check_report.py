"""Markdown view of a ``benchmarks/gpu_check.py`` report (the JSON beside it is the record)."""

from __future__ import annotations


def _fmt(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


def _figures(sec: dict) -> list[str]:
    figs = sec.get("figures", {})
    if not figs:
        return []
    out = ["| figure | value | how | reason / note |", "|---|---|---|---|"]
    for name, v in figs.items():
        out.append(f"| {name} | {_fmt(v)} | {sec.get('how', {}).get(name, '')} | {sec.get('reasons', {}).get(name, '')} |")
    return out + [""]


METHOD_COLS = ("method", "precision", "status", "trainable_params", "mem_model_bytes", "cuda_peak_allocated_bytes",
               "cuda_peak_reserved_bytes", "allocated_over_modelled", "step_time_s", "samples_per_s",
               "energy_per_step_kwh")


def _methods(sec: dict) -> list[str]:
    rows = sec.get("rows") or []
    if not rows:
        return []
    out = ["| " + " | ".join(METHOD_COLS) + " |", "|" + "---|" * len(METHOD_COLS)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c)) for c in METHOD_COLS) + " |")
    out.append("")
    reasons = sorted({f"{k}: {v}" for r in rows for k, v in r.get("reasons", {}).items()})
    errors = [f"{r['method']} {r['precision']}: {r['error']}" for r in rows if r.get("error")]
    out += [f"- null because {r}" for r in reasons] + [f"- failed: {e}" for e in errors]
    return out + [""]


def render_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# energybench GPU check — {m.get('gpu_name') or 'no GPU'}{' (dry run)' if report['dry_run'] else ''}",
             "", f"- command: `{report['command']}`", f"- date: {report['date']}",
             f"- GPU: {m.get('gpu_name') or 'null (' + m['reasons'].get('gpu_name', '') + ')'} × {m.get('gpu_count')}",
             f"- driver: {m.get('driver') or 'null (' + m['reasons'].get('driver', '') + ')'}",
             f"- torch {m['torch']}, CUDA build {m.get('cuda_build')}, cuDNN {m.get('cudnn')}, "
             f"python {m['python']}, host {m['host']}", ""]
    if report["dry_run"]:
        lines += ["**Dry run on CPU with tiny shapes: no figure here was measured on a GPU.**", ""]
    for name, sec in report["sections"].items():
        lines += [f"## {name}", "", f"status: **{sec['status']}**"
                  + (f" in {sec['wall_s']} s (limit {sec['limit_s']:g} s, expected "
                     f"~{report['expected_s'][name]} s on an H100/H200)" if "wall_s" in sec else ""), ""]
        if sec.get("reason"):
            lines += [f"reason: {sec['reason']}", ""]
        if sec.get("error"):
            lines += [f"error: `{sec['error']}`", ""]
        lines += [f"- {n}" for n in sec.get("notes", [])] + ([""] if sec.get("notes") else [])
        lines += _figures(sec) + _methods(sec)
        if sec.get("blocks"):
            lines += ["blocks (median step s): " + ", ".join(f"{b['kind']} {b['median_step_s']:.4g}"
                                                            for b in sec["blocks"]), ""]
        if sec.get("output"):
            lines += ["```", sec["output"].rstrip(), "```", ""]
    return "\n".join(lines)
