"""The report's tables: READ's Table 1 (quality) and Table 3 (efficiency) from a runs frame.

Every cell is a :class:`Cell` — mean ± std over seeds plus the notes that
explain it (why it is empty, that it rests on fewer seeds, that it is an
estimate). Renderers (Markdown here, HTML in :mod:`energybench.report.html`)
turn notes into numbered footnotes, so a missing number is never a bare
dash and never a zero.

Aggregation follows READ: per seed, a metric is first combined over the
backbone's tasks — summed for energy and time (Table 3: "total over all
tasks"), averaged for memory, latency and FLOPs — then its mean and standard
deviation are taken over seeds. A seed that lacks a finished run of some
task is left out of that combination (and the cell says so), rather than
summing an incomplete set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from energybench.report.safe import md_text

REASON = "reason:"
PROVENANCE = "provenance:"
NOT_RECORDED = "not recorded by the run (no tracker produced this figure in that energybench version or setup)"
SUPERSCRIPTS = str.maketrans("0123456789,", "⁰¹²³⁴⁵⁶⁷⁸⁹˒")

Combine = Literal["sum", "mean"]
Kind = Literal["score", "energy", "bytes", "flops", "ms", "s", "count"]


@dataclass(frozen=True)
class Metric:
    """One efficiency column: a frame column, how tasks combine, and its unit family."""

    key: str
    label: str
    kind: Kind
    combine: Combine
    exact: bool = False  # deterministic: identical over seeds, so no ± is shown when std is 0


EFFICIENCY_METRICS: tuple[Metric, ...] = (
    Metric("train.gpu_energy_kwh", "Train GPU energy, counter", "energy", "sum"),
    Metric("train.gpu_energy_read_kwh", "Train GPU energy, READ estimate", "energy", "sum"),
    Metric("train.host_energy_kwh", "Train CPU+RAM energy", "energy", "sum"),
    Metric("train.wall_s", "Train wall time", "s", "sum"),
    Metric("train.peak_gpu_mem_bytes", "Peak train memory (CUDA)", "bytes", "mean"),
    Metric("mem_model_bytes", "mem_model_bytes", "bytes", "mean", exact=True),
    Metric("train.peak_rss_bytes", "Peak RSS (train)", "bytes", "mean"),
    Metric("inference.peak_gpu_mem_bytes", "Inference memory (CUDA)", "bytes", "mean"),
    Metric("inference.infer_latency_ms_p50", "Latency p50", "ms", "mean"),
    Metric("inference.infer_latency_ms_p99", "Latency p99", "ms", "mean"),
    Metric("train_flops", "Train FLOPs / step", "flops", "mean", exact=True),
)
QUALITY_ENERGY = Metric("train.gpu_energy_kwh", "GPU energy", "energy", "sum")

_UNITS: dict[str, list[tuple[str, float]]] = {
    "energy": [("kWh", 1.0), ("Wh", 1e-3), ("mWh", 1e-6), ("µWh", 1e-9)],
    "bytes": [("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10), ("B", 1.0)],
    "flops": [("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("FLOP", 1.0)],
    "ms": [("ms", 1.0)],
    "s": [("s", 1.0)],
    "score": [("", 1.0)],
    "count": [("", 1.0)],
}


def unit_for(kind: Kind, values: list[float]) -> tuple[str, float]:
    """The largest unit in which the column's largest value is at least 0.1 (kWh, Wh, mWh …)."""
    scales = _UNITS[kind]
    top = max((abs(v) for v in values if v is not None and not math.isnan(v)), default=None)
    if not top:  # no value (or only zeros): name the base unit rather than a scale fitted to nothing
        return next((u for u in scales if u[1] == 1.0), scales[0])
    for name, scale in scales:
        if top >= 0.1 * scale:
            return name, scale
    return scales[-1]


def fmt_number(value: float, decimals: int | None = None) -> str:
    """Three significant figures without scientific notation for everyday magnitudes."""
    if decimals is None:
        decimals = significant_decimals(value)
    return f"{value:,.{decimals}f}"


def significant_decimals(value: float, figures: int = 3) -> int:
    if value == 0 or math.isnan(value):
        return 0
    return max(0, figures - 1 - math.floor(math.log10(abs(value))))


@dataclass
class Cell:
    """A summary over seeds. ``mean is None`` means no value exists; ``notes`` say why."""

    mean: float | None = None
    std: float | None = None
    n: int = 0
    n_total: int = 0
    notes: list[str] = field(default_factory=list)
    pct: float | None = None  # % of the baseline method's mean
    exact: bool = False

    def text(self, kind: Kind = "score", scale: float = 1.0, show_pct: bool = False) -> str:
        if self.mean is None:
            return "—"
        m = self.mean / scale
        decimals = 2 if kind == "score" else significant_decimals(m)
        s = fmt_number(m, decimals)
        if self.std is not None and not (self.exact and self.std == 0):
            s += f" ± {fmt_number(self.std / scale, decimals)}"
        if show_pct and self.pct is not None:
            s += f" ({fmt_pct(self.pct)})"
        return s


def fmt_pct(pct: float) -> str:
    return f"{pct:.1f}%" if abs(pct) < 10 else f"{pct:.0f}%"


class Footnotes:
    """Numbers notes in order of first use; the same text keeps its number."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def numbers(self, notes: list[str]) -> list[int]:
        out = []
        for t in notes:
            if t not in self.texts:
                self.texts.append(t)
            n = self.texts.index(t) + 1
            if n not in out:
                out.append(n)
        return out

    def marks(self, notes: list[str]) -> str:
        nums = self.numbers(notes)
        return ",".join(map(str, nums)).translate(SUPERSCRIPTS) if nums else ""


# --------------------------------------------------------------------------- aggregation


def _column(g: pd.DataFrame, key: str) -> pd.Series:
    if key in g.columns:
        return pd.to_numeric(g[key], errors="coerce")
    return pd.Series([float("nan")] * len(g), index=g.index, dtype=float)


def null_reasons(g: pd.DataFrame, key: str) -> list[str]:
    """Why ``key`` is null in the rows of ``g`` where it is null (unique, in row order)."""
    vals = _column(g, key)
    reasons: list[str] = []
    col = g[REASON + key] if REASON + key in g.columns else pd.Series([None] * len(g), index=g.index)
    for idx in g.index[vals.isna()]:
        r = col.loc[idx]
        r = r if isinstance(r, str) and r else NOT_RECORDED
        if r not in reasons:
            reasons.append(r)
    return reasons


def estimate_notes(g: pd.DataFrame, key: str) -> list[str]:
    """A note for values whose provenance is an estimate (e.g. CodeCarbon's TDP model)."""
    if PROVENANCE + key not in g.columns:
        return []
    vals = _column(g, key)
    prov = g[PROVENANCE + key]
    est = g.index[(prov == "estimated") & vals.notna()]
    if len(est) == 0:
        return []
    why = sorted({str(g.at[i, REASON + key]) for i in est
                  if REASON + key in g.columns and isinstance(g.at[i, REASON + key], str)})
    return ["an estimate, not a measurement" + (f": {'; '.join(why)}" if why else "")]


def per_seed(g: pd.DataFrame, key: str, tasks: list[str], combine: Combine) -> tuple[dict, list[str]]:
    """``{seed: value combined over tasks}`` for seeds whose every task has a value; notes for the others."""
    vals = _column(g, key)
    out: dict = {}
    notes: list[str] = []
    for seed, gs in g.groupby("seed", sort=True):
        present = set(gs["task"])
        missing = [t for t in tasks if t not in present]
        if missing:
            notes.append(f"seed {seed} has no finished run of {', '.join(missing)} (see Failed runs)")
            continue
        per_task = []
        for t in tasks:
            v = vals.loc[gs.index[gs["task"] == t]].dropna()
            if v.empty:
                break
            per_task.append(float(v.mean()))  # a run present in two run directories: mean of both
        else:
            out[seed] = sum(per_task) if combine == "sum" else sum(per_task) / len(per_task)
    return out, notes


def summarize(g: pd.DataFrame, key: str, tasks: list[str], combine: Combine = "mean",
              exact: bool = False) -> Cell:
    """Mean ± std over seeds of ``key`` combined over ``tasks`` per seed, with notes."""
    by_seed, notes = per_seed(g, key, tasks, combine)
    n_total = g["seed"].nunique()
    values = list(by_seed.values())
    cell = Cell(n=len(values), n_total=n_total, exact=exact)
    reasons = null_reasons(g[g["task"].isin(tasks)], key)
    if values:
        s = pd.Series(values, dtype=float)
        cell.mean = float(s.mean())
        cell.std = float(s.std(ddof=1)) if len(s) > 1 else None
        if len(values) < n_total:
            why = "; ".join(notes + reasons) or "incomplete runs"
            cell.notes.append(f"mean over {len(values)} of {n_total} seeds; the others lack it: {why}")
        cell.notes += estimate_notes(g, key)
    else:
        why = reasons + notes
        cell.notes.append("; ".join(why) if why else "no finished run")
    return cell


def with_pct(cell: Cell, baseline: Cell | None, baseline_name: str, what: str) -> Cell:
    """Fill ``cell.pct`` relative to ``baseline``; a note says why it cannot be."""
    if cell.mean is None:
        return cell
    if baseline is None:
        cell.notes.append(f"no % of {baseline_name} for {what}: no {baseline_name} runs on this backbone "
                          f"(--baseline-method)")
    elif baseline.mean is None or baseline.mean == 0:
        cell.notes.append(f"no % of {baseline_name} for {what}: the {baseline_name} value is missing")
    else:
        cell.pct = 100.0 * cell.mean / baseline.mean
    return cell


def pct_cell(cell: Cell, baseline: Cell | None, baseline_name: str, what: str) -> Cell:
    """A standalone "% of baseline" cell (the quality table's column)."""
    if cell.mean is None:
        return Cell(notes=list(cell.notes))
    c = with_pct(Cell(mean=cell.mean, notes=[]), baseline, baseline_name, what)
    return Cell(mean=c.pct, notes=c.notes)


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A rendered-agnostic table: header labels and rows of plain strings or Cells with their kinds."""

    title: str
    caption: str
    header: list[str]
    rows: list[list]  # each item: str, or (Cell, kind, scale, show_pct)
    export: pd.DataFrame


def order_methods(g: pd.DataFrame, baseline: str | None) -> list[str]:
    methods = list(dict.fromkeys(g["method"]))
    if baseline in methods:
        methods.remove(baseline)
        methods.insert(0, baseline)
    return methods


def resolve_baseline(frame: pd.DataFrame, name: str) -> str | None:
    """The display label of the baseline: a label equal to ``name``, else the one method registered as ``name``."""
    if name in set(frame["method"]):
        return name
    if "method_name" not in frame.columns:
        return None
    labels = sorted(set(frame.loc[frame["method_name"] == name, "method"]))
    return labels[0] if len(labels) == 1 else None


def quality_table(ok: pd.DataFrame, baseline: str | None, baseline_name: str) -> Table:
    """READ Table 1: per-task score, average, trainable %, GPU energy (all tasks) and its % of the baseline."""
    tasks = sorted(ok["task"].unique())
    methods = order_methods(ok, baseline)
    energy = {m: summarize(ok[ok["method"] == m], QUALITY_ENERGY.key, tasks, "sum") for m in methods}
    base_energy = energy.get(baseline) if baseline else None
    unit, scale = unit_for("energy", [c.mean for c in energy.values() if c.mean is not None])
    header = ["Method", *tasks, "Avg.", "Trainable params (%)", f"GPU energy, train, all tasks ({unit})",
              f"% of {baseline_name} energy", "Train time per run (s)"]
    rows, export = [], []
    for m in methods:
        g = ok[ok["method"] == m]
        task_cells = [summarize(g, "score", [t]) for t in tasks]
        avg = summarize(g, "score", tasks, "mean")
        pct = 100 * _column(g, "trainable_params") / _column(g, "total_params")
        trainable = _column(g, "trainable_params").dropna()
        time_s = _column(g, "train.wall_s").dropna()
        time_cell = Cell(mean=float(time_s.mean()) if len(time_s) else None,
                         std=float(time_s.std(ddof=1)) if len(time_s) > 1 else None, n=len(time_s))
        if time_cell.mean is None:
            time_cell.notes += null_reasons(g, "train.wall_s")
        e = energy[m]
        e_pct = pct_cell(e, base_energy, baseline_name, "GPU energy")
        trainable_txt = (f"{int(trainable.median()):,} ({pct.dropna().mean():.3f}%)" if len(trainable)
                         and pct.notna().any() else "—")
        rows.append([m, *[(c, "score", 1.0, False) for c in task_cells], (avg, "score", 1.0, False), trainable_txt,
                     (e, "energy", scale, False), (e_pct, "pct", 1.0, False), (time_cell, "s", 1.0, False)])
        rec: dict = {"method": m}
        for t, c in zip(tasks, task_cells):
            rec[f"{t}_mean"], rec[f"{t}_std"] = c.mean, c.std
        rec["average_mean"], rec["average_std"] = avg.mean, avg.std
        rec["trainable_pct_mean"] = float(pct.dropna().mean()) if pct.notna().any() else None
        rec["trainable_params"] = int(trainable.median()) if len(trainable) else None
        rec["train_time_s_mean"], rec["train_time_s_std"] = time_cell.mean, time_cell.std
        rec["gpu_energy_kwh_mean"], rec["gpu_energy_kwh_std"] = e.mean, e.std
        rec["gpu_energy_pct_of_baseline"] = e_pct.mean
        rec["gpu_energy_note"] = " | ".join(e.notes) or None
        rec["runs"] = len(g)
        export.append(rec)
    caption = ("Test-set score per task (GLUE metric, READ's split protocol), mean ± std over seeds; Avg. is the "
               "per-seed average over tasks, then mean ± std over seeds. GPU energy is NVML's energy counter "
               f"over the training window, summed over tasks (READ Table 1/3); % is relative to {baseline_name}.")
    return Table("Quality (READ Table 1)", caption, header, rows, pd.DataFrame(export))


def efficiency_table(ok: pd.DataFrame, baseline: str | None, baseline_name: str,
                     metrics: tuple[Metric, ...] = EFFICIENCY_METRICS) -> Table:
    """READ Table 3: energy (counter and READ's estimate), memory, latency, FLOPs, each with % of the baseline."""
    tasks = sorted(ok["task"].unique())
    methods = order_methods(ok, baseline)
    cells = {m: {mt.key: summarize(ok[ok["method"] == m], mt.key, tasks, mt.combine, mt.exact) for mt in metrics}
             for m in methods}
    header, scales = ["Method"], {}
    for mt in metrics:
        unit, scale = unit_for(mt.kind, [cells[m][mt.key].mean for m in methods if cells[m][mt.key].mean is not None])
        scales[mt.key] = scale
        header.append(f"{mt.label} ({unit}, {'sum' if mt.combine == 'sum' else 'mean'} over tasks)")
    rows, export = [], []
    for m in methods:
        row, rec = [m], {"method": m}
        for mt in metrics:
            base = cells[baseline][mt.key] if baseline in cells else None
            c = cells[m][mt.key]
            if m != baseline:
                with_pct(c, base, baseline_name, mt.key)
            elif c.mean is not None:
                c.pct = 100.0
            row.append((c, mt.kind, scales[mt.key], True))
            name = mt.key.replace(".", "_")
            rec[f"{name}_mean"], rec[f"{name}_std"], rec[f"{name}_seeds"] = c.mean, c.std, c.n
            rec[f"{name}_pct_of_baseline"] = c.pct
            rec[f"{name}_note"] = " | ".join(c.notes) or None
        rows.append(row)
        export.append(rec)
    caption = (f"Per seed, energy and time are summed over the {len(tasks)} task(s) and memory, latency and FLOPs "
               f"averaged over them; then mean ± std over seeds. In parentheses: % of {baseline_name}. Latency is "
               "measured on the deployed model (merged where the method allows) at the suite's latency batch size "
               "(READ: 1). mem_model_bytes and FLOPs are deterministic accounting, the same on every machine.")
    return Table("Efficiency (READ Table 3)", caption, header, rows, pd.DataFrame(export))


# --------------------------------------------------------------------------- Markdown


def _md_escape(s: str) -> str:
    return md_text(s)


def render_cell_md(item, notes: Footnotes) -> str:
    if isinstance(item, str):
        return _md_escape(item)
    cell, kind, scale, show_pct = item
    if kind == "pct":
        txt = fmt_pct(cell.mean) if cell.mean is not None else "—"
    else:
        txt = cell.text(kind, scale, show_pct)
    return txt + notes.marks(cell.notes)


def table_markdown(table: Table, notes: Footnotes) -> str:
    from energybench.report.empty_columns import EMPTY_COLUMNS_LEAD, collapsed

    table, dropped = collapsed(table)
    lines = ["| " + " | ".join(_md_escape(h) for h in table.header) + " |", "|" + "---|" * len(table.header)]
    for row in table.rows:
        lines.append("| " + " | ".join(render_cell_md(c, notes) for c in row) + " |")
    if dropped:
        lines += ["", EMPTY_COLUMNS_LEAD + " " + "; ".join(f"{_md_escape(h)}{notes.marks(reasons)}"
                                                          for h, reasons in dropped) + "."]
    return "\n".join(lines)


def footnotes_markdown(notes: Footnotes) -> str:
    if not notes.texts:
        return ""
    return "\n".join(["## Notes", ""] + [f"{str(i).translate(SUPERSCRIPTS)} {_md_escape(t)}  "
                                         for i, t in enumerate(notes.texts, 1)])
