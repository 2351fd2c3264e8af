"""The report's cost-to-target and search tables, from the rows' ``to_target`` and the search trials' rows.

Cost to target (MLPerf Training's convention, laid out like READ's Table 3):
per method and task, the steps, wall time and energy a run spent up to its
first validation at or above the target, mean ± std over the seeds that
reached it, with % of the baseline method (full fine-tuning by default) and
the number of seeds that reached it. The cost includes the periodic
validations up to that point, as the training window does.

Search (READ's protocol): per method and task, the trials run, the learning
rate chosen and what the search cost — the training windows of every trial
summed (energy, wall time, GPU-hours). What a method costs to use includes
finding its learning rate.
"""

from __future__ import annotations

import pandas as pd

from energybench.report.tables import (
    PROVENANCE,
    REASON,
    Cell,
    Table,
    fmt_number,
    fmt_pct,
    order_methods,
    summarize,
    unit_for,
    with_pct,
)

TT = "to_target."
TT_FIELDS = (("step", "Steps", "count"), ("wall_s", "Time (s)", "s"), ("energy_kwh", "Energy, GPU+CPU+RAM", "energy"))


def is_trial(row: dict) -> bool:
    return row.get("role") == "trial"


def target_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per finished final run that was held to a target: ``to_target.<field>`` with reasons."""
    out = []
    for r in rows:
        if is_trial(r) or r.get("status") != "ok" or ("to_target" not in r and "target" not in r):
            continue
        if r.get("target") is None and r.get("to_target") is None and not r.get("to_target_reason"):
            continue
        rec = {k: r.get(k) for k in ("backbone", "task", "method", "method_name", "seed", "run_id")}
        rec["target.score"] = (r.get("target") or {}).get("score")
        point = r.get("to_target") or {}
        why = r.get("to_target_reason")
        for name, _, _ in TT_FIELDS + (("examples", "", ""), ("val_score", "", "")):
            rec[TT + name] = point.get(name)
            if point.get(name) is None:
                rec[REASON + TT + name] = (point.get("reasons") or {}).get(name) or why or "not recorded"
            if name in (point.get("provenance") or {}):
                rec[PROVENANCE + TT + name] = point["provenance"][name]
        rec["reached"] = bool(point)
        out.append(rec)
    return pd.DataFrame(out)


class StepsCell(Cell):
    """Steps are whole numbers: no decimals unless the mean over seeds has them."""

    def text(self, kind="count", scale=1.0, show_pct=False) -> str:
        if self.mean is None:
            return "—"
        s = f"{self.mean:.0f}" if float(self.mean).is_integer() else f"{self.mean:.1f}"
        if self.std is not None and self.std > 0:
            s += f" ± {self.std:.1f}"
        if show_pct and self.pct is not None:
            s += f" ({fmt_pct(self.pct)})"
        return s


def _text(c: Cell, kind: str, scale: float) -> tuple:
    if kind == "count":
        c = StepsCell(**vars(c))
    return (c, kind, scale, True)


def cost_to_target_table(tt: pd.DataFrame, baseline: str | None, baseline_name: str) -> Table:
    """Rows: task × method. Columns: target, seeds that reached it, steps / time / energy to target (% of baseline)."""
    methods = order_methods(tt, baseline)
    tasks = sorted(tt["task"].unique())
    cells = {(t, m, f): summarize(tt[(tt["method"] == m) & (tt["task"] == t)], TT + f, [t], "mean", exact=f == "step")
             for t in tasks for m in methods for f, _, _ in TT_FIELDS}
    scales, header = {}, ["Task", "Method", "Target (val)", "Seeds reached"]
    for f, label, kind in TT_FIELDS:
        unit, scale = unit_for(kind, [c.mean for (_, _, ff), c in cells.items() if ff == f and c.mean is not None])
        scales[f] = scale
        header.append(f"{label}{f' ({unit})' if unit and kind != 's' else ''} to target")
    rows, export = [], []
    for t in tasks:
        for m in methods:
            g = tt[(tt["method"] == m) & (tt["task"] == t)]
            target = pd.to_numeric(g["target.score"], errors="coerce").dropna()
            target_txt = "—" if target.empty else fmt_number(float(target.mean()), 2) + (
                f" ± {fmt_number(float(target.std(ddof=1)), 2)}" if len(target) > 1 and target.std(ddof=1) > 0 else "")
            row = [t, m, target_txt, f"{int(g['reached'].sum())} of {g['seed'].nunique()}"]
            rec = {"task": t, "method": m, "target_mean": float(target.mean()) if len(target) else None,
                   "seeds_reached": int(g["reached"].sum()), "seeds": int(g["seed"].nunique())}
            for f, _, kind in TT_FIELDS:
                c = cells[(t, m, f)]
                base = cells.get((t, baseline, f)) if baseline else None
                if m != baseline:
                    with_pct(c, base, baseline_name, f"{f} to target on {t}")
                elif c.mean is not None:
                    c.pct = 100.0
                row.append(_text(c, kind, scales[f]))
                rec[f"{f}_mean"], rec[f"{f}_std"], rec[f"{f}_pct_of_baseline"] = c.mean, c.std, c.pct
                rec[f"{f}_note"] = " | ".join(c.notes) or None
            rows.append(row)
            export.append(rec)
    caption = ("MLPerf-style cost to target: steps, wall time and energy up to the first periodic validation at or "
               "above the target (periodic validations included), mean ± std over the seeds that reached it; in "
               f"parentheses % of {baseline_name} on the same task. Relative targets are a fraction of the "
               "seed-matched reference run's best validation score. Energy is the training window's total "
               "(GPU + CPU + RAM) so far.")
    return Table("Cost to target", caption, header, rows, pd.DataFrame(export))


def search_frame(rows: list[dict]) -> pd.DataFrame:
    out = []
    for r in rows:
        if not is_trial(r):
            continue
        train = (r.get("windows") or {}).get("train") or {}
        reasons = train.get("reasons") or {}
        lr = ((r.get("trial") or {}).get("params") or {}).get("learning_rate")
        if lr is None:
            lr = ((r.get("config") or {}).get("training") or {}).get("learning_rate")
        gpus = train.get("gpu_count")
        wall = train.get("wall_s")
        out.append({"pruned": r.get("pruned_at_step") is not None,
                    "backbone": r.get("backbone"), "task": r.get("task"), "method": r.get("method"),
                    "method_name": r.get("method_name"), "status": r.get("status"), "lr": lr,
                    "val_score": r.get("val_score") if r.get("status") == "ok" else None,
                    "energy_kwh": train.get("energy_kwh"), "wall_s": wall,
                    "gpu_hours": wall * gpus / 3600 if wall is not None and gpus else None,
                    "reason:energy_kwh": reasons.get("energy_kwh") or ("the run failed" if r.get("status") != "ok"
                                                                       else None),
                    "reason:wall_s": reasons.get("wall_s") or ("the run failed" if r.get("status") != "ok" else None),
                    "reason:gpu_hours": None if gpus else _no_gpu_reason(r, reasons)})
    return pd.DataFrame(out)


def _no_gpu_reason(row: dict, reasons: dict) -> str:
    if str((row.get("environment") or {}).get("device", "")).startswith("cpu"):
        return "the trials ran on CPU (no GPU-hours)"
    return reasons.get("gpu_count") or reasons.get("gpu_energy_kwh") or "no GPU count recorded"


def _sum_cell(v: pd.Series, reasons: pd.Series) -> Cell:
    """A total over trials; null (with why) when any trial lacks it — a partial sum would understate."""
    vals = pd.to_numeric(v, errors="coerce")
    if len(vals) and vals.notna().all():
        return Cell(mean=float(vals.sum()), n=len(vals))
    why = sorted({str(x) for x in reasons[vals.isna()] if isinstance(x, str) and x}) or ["not recorded"]
    return Cell(notes=[f"{int(vals.isna().sum())} of {len(vals)} trial(s) lack it: " + "; ".join(why)])


def search_table(sf: pd.DataFrame, baseline: str | None) -> Table:
    """Rows: method × task, then each method's total over tasks. Columns: trials, best lr and val, search cost."""
    methods = order_methods(sf, baseline)
    tasks = sorted(sf["task"].unique())
    groups = [(m, t, sf[(sf["method"] == m) & (sf["task"] == t)]) for m in methods for t in tasks]
    groups += [(m, "all tasks", sf[sf["method"] == m]) for m in methods if len(tasks) > 1]
    cost = {(m, t): {k: _sum_cell(g[k], g[f"reason:{k}"]) for k in ("energy_kwh", "wall_s", "gpu_hours")}
            for m, t, g in groups}
    unit, scale = unit_for("energy", [c["energy_kwh"].mean for c in cost.values() if c["energy_kwh"].mean])
    header = ["Method", "Task", "Trials (failed, pruned)", "Best learning rate", "Best val score",
              f"Search energy ({unit})", "Search time (s)", "GPU-hours"]
    rows, export = [], []
    for m, t, g in groups:
        ok = g[(g["status"] == "ok") & ~g["pruned"]].dropna(subset=["val_score"])  # as the search chose
        best = ok.sort_values("val_score", ascending=False, kind="stable").head(1) if t != "all tasks" else ok.iloc[0:0]
        lr_txt = f"{float(best['lr'].iloc[0]):.3g}" if len(best) else ("—" if t != "all tasks" else "")
        val_txt = f"{float(best['val_score'].iloc[0]):.2f}" if len(best) else ("—" if t != "all tasks" else "")
        failed = int((g["status"] != "ok").sum())
        c = cost[(m, t)]
        pruned = int(g["pruned"].sum())
        rows.append([m, t, f"{len(g)} ({failed}, {pruned})", lr_txt, val_txt, (c["energy_kwh"], "energy", scale, False),
                     (c["wall_s"], "s", 1.0, False), (c["gpu_hours"], "s", 1.0, False)])
        export.append({"method": m, "task": t, "trials": len(g), "failed": failed, "pruned": pruned,
                       "best_learning_rate": float(best["lr"].iloc[0]) if len(best) else None,
                       "best_val_score": float(best["val_score"].iloc[0]) if len(best) else None,
                       **{f"search_{k}": v.mean for k, v in c.items()}})
    caption = ("READ's protocol: the learning rate of each method and task chosen by Bayesian search (Optuna TPE, "
               "log-uniform) on the validation score, at the suite's first seed; the final runs above train with it. "
               "Search cost is the sum of every trial's training window (periodic validation included).")
    return Table("Learning-rate search", caption, header, rows, pd.DataFrame(export))



