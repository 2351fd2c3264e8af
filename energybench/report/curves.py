"""Learning curves and the cost-to-target variant of the quality-vs-cost figure.

Learning curves: validation score against the cumulative training energy at
each periodic validation, one line per method (each seed drawn, one label per
method), one panel per task, so a reader sees where each method stops paying
off. Where some point has no energy figure (e.g. host energy disabled), the x
axis falls back to cumulative wall time and the axis label says so; an energy
that is an estimate (CodeCarbon's TDP model) is labelled as one.
"""

from __future__ import annotations

import math

import pandas as pd

from energybench.report.plots import Plot, _png, plt, slug
from energybench.report.tables import PROVENANCE, per_seed, unit_for

AXES = (("energy_kwh", "cumulative training energy, GPU+CPU+RAM", "energy"),
        ("wall_s", "cumulative training wall time — energy not recorded at every validation", "s"))


def _curves(rows: list[dict], backbone: str) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and r.get("role", "final") == "final"
            and r.get("backbone") == backbone and r.get("curve")]


def learning_curves(rows: list[dict], backbone: str) -> Plot:
    name, title = f"learning_curves_{slug(backbone)}.png", f"Validation score vs cumulative cost — {backbone}"
    runs = _curves(rows, backbone)
    if not runs:
        return Plot(name, title, why="no finished run recorded a learning curve (validation points with their cost)")
    points = [p for r in runs for p in r["curve"]]
    key, label, kind = next(((k, lab, kd) for k, lab, kd in AXES if all(p.get(k) is not None for p in points)),
                            (None, None, None))
    if key is None:
        return Plot(name, title, why="no cost figure (energy or wall time) at every validation point")
    if key != AXES[0][0]:
        why = sorted({str((p.get("reasons") or {}).get("energy_kwh")) for p in points if p.get("energy_kwh") is None})
        caption_axis = f"Energy not recorded at every validation ({'; '.join(why)}); x axis: cumulative wall time."
    else:
        caption_axis = ""
        if any((p.get("provenance") or {}).get("energy_kwh") == "estimated" for p in points):
            label += " — an estimate"
    unit, scale = unit_for(kind, [p[key] for p in points])
    tasks = sorted({r["task"] for r in runs})
    methods = list(dict.fromkeys(r["method"] for r in runs))
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    cols = min(3, len(tasks))
    fig, axes = plt.subplots(math.ceil(len(tasks) / cols), cols, figsize=(4.6 * cols, 3.6 * math.ceil(len(tasks) / cols)),
                             squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        seen = set()
        for r in (r for r in runs if r["task"] == task):
            xs = [p[key] / scale for p in r["curve"]]
            ys = [p["val_score"] for p in r["curve"]]
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, color=colors[r["method"]], alpha=0.8,
                    label=None if r["method"] in seen else r["method"])
            seen.add(r["method"])
        targets = [(r.get("target") or {}).get("score") for r in runs if r["task"] == task]
        targets = [t for t in targets if t is not None]
        if targets:
            ax.axhline(sum(targets) / len(targets), color="grey", linestyle=":", linewidth=1,
                       label="target" + (" (mean over runs)" if len(set(targets)) > 1 else ""))
        ax.set_title(task, fontsize=9)
        ax.set_xlabel(f"{label} ({unit})", fontsize=8)
        ax.set_ylabel("validation score", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    caption = ("One line per run (colour: method) through its periodic validations; the dotted line is the target. "
               "Cost includes the periodic validations." + (" " + caption_axis if caption_axis else ""))
    return Plot(name, title, _png(fig), caption=caption, xlabel=f"{label} ({unit})")


def quality_vs_cost_to_target(tt: pd.DataFrame, ok: pd.DataFrame, backbone: str) -> Plot:
    """Average test score against the energy (else wall time) to target, summed over tasks, per method."""
    name, title = f"quality_cost_to_target_{slug(backbone)}.png", f"Quality vs cost to target — {backbone}"
    tasks = sorted(tt["task"].unique()) if not tt.empty else []
    methods = list(dict.fromkeys(tt["method"])) if not tt.empty else []
    for key, label, kind in (("to_target.energy_kwh", "energy to target, GPU+CPU+RAM", "energy"),
                             ("to_target.wall_s", "wall time to target — energy not recorded", "s")):
        cost = {m: list(per_seed(tt[tt["method"] == m], key, tasks, "sum")[0].values()) for m in methods}
        quality = {m: list(per_seed(ok[ok["method"] == m], "score", tasks, "mean")[0].values()) for m in methods}
        have = [m for m in methods if cost[m] and quality[m]]
        if have:
            break
    else:
        return Plot(name, title, why="no method reached the target on every task for some seed")
    unit, scale = unit_for(kind, [sum(cost[m]) / len(cost[m]) for m in have])
    prov = PROVENANCE + key
    if prov in tt.columns and (tt[prov] == "estimated").any():
        label += " — an estimate"
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for m in have:
        x, y = sum(cost[m]) / len(cost[m]) / scale, sum(quality[m]) / len(quality[m])
        ax.plot([x], [y], "o", label=m)
        ax.annotate(m, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    xlabel = f"{label} ({unit}, sum over {len(tasks)} task(s))"
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("average test score over tasks")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    missing = [m for m in methods if m not in have]
    caption = "Mean over the seeds that reached the target on every task."
    if missing:
        caption += f" Not plotted (target not reached on every task by any seed): {', '.join(missing)}."
    return Plot(name, title, _png(fig), caption=caption, xlabel=xlabel)
