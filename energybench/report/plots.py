"""The report's figures as PNG bytes (matplotlib, Agg backend: works headless).

Each function returns a :class:`Plot` — PNG bytes, or ``None`` with the
reason it could not be drawn — so the report can say why a figure is
missing instead of drawing nulls as zeros. Figures follow READ's Figure 1:
quality against training energy with the Pareto frontier (left), peak
training memory per method (middle); plus READ's utilization × p0 estimate
against the energy counter, and for budgeted low-rank methods (AdaLoRA,
dynamic-rank DoRA) the live rank of every adapted matrix.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from energybench.report.tables import (  # noqa: E402
    NOT_RECORDED,
    PROVENANCE,
    null_reasons,
    per_seed,
    unit_for,
)

DPI = 110


@dataclass
class Plot:
    """A figure: ``png`` bytes, or ``None`` and ``why`` it was not drawn."""

    name: str  # file name, e.g. quality_energy_tiny-t5.png
    title: str
    png: bytes | None = None
    why: str | None = None
    caption: str = ""
    xlabel: str = ""  # the axis label as drawn (tests and the report check a fallback axis is named)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "x"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats: lower-or-equal cost (x) and higher-or-equal quality (y),
    one strictly. Returned in increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_y = [], -math.inf
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front


# Axes for "quality vs cost", best first; the first that every method has is used.
COST_AXES = (
    ("train.gpu_energy_kwh", "training GPU energy, NVML counter", "energy"),
    ("train.gpu_energy_power_kwh", "training GPU energy, integrated NVML power", "energy"),
    ("train.gpu_energy_read_kwh", "training GPU energy, READ's utilization × p0 estimate", "energy"),
    ("train.host_energy_kwh", "training CPU+RAM energy (CodeCarbon)", "energy"),
    ("train.wall_s", "training wall time — no energy figure available", "s"),
)


def _method_means(g: pd.DataFrame, key: str, tasks: list[str], combine: str) -> tuple[float | None, float | None]:
    vals = list(per_seed(g, key, tasks, combine)[0].values())
    if not vals:
        return None, None
    s = pd.Series(vals, dtype=float)
    return float(s.mean()), (float(s.std(ddof=1)) if len(s) > 1 else 0.0)


def quality_vs_cost(ok: pd.DataFrame, backbone: str) -> Plot:
    """READ Figure 1 (left): average score against training energy (sum over tasks), Pareto frontier marked."""
    name, title = f"quality_energy_{slug(backbone)}.png", f"Quality vs training energy — {backbone}"
    tasks = sorted(ok["task"].unique())
    methods = list(dict.fromkeys(ok["method"]))
    quality = {m: _method_means(ok[ok["method"] == m], "score", tasks, "mean") for m in methods}
    scored = [m for m in methods if quality[m][0] is not None]
    if not scored:
        return Plot(name, title, why="no method has a score on every task for any seed")
    best = None
    for key, label, kind in COST_AXES:
        cost = {m: _method_means(ok[ok["method"] == m], key, tasks, "sum") for m in scored}
        have = [m for m in scored if cost[m][0] is not None]
        if best is None or len(have) > len(best[3]):
            best = (key, label, kind, have, cost)
        if len(have) == len(scored):
            break
    key, label, kind, have, cost = best
    if not have:
        return Plot(name, title, why="no cost axis (GPU energy, host energy, wall time) has a value")
    prov_col = PROVENANCE + key
    if prov_col in ok.columns and (ok[prov_col] == "estimated").any():
        label += " — an estimate"
    fallback_note = ""
    if key != COST_AXES[0][0]:
        why = "; ".join(null_reasons(ok, COST_AXES[0][0])) or NOT_RECORDED
        fallback_note = f"GPU energy counter not available ({why}); x axis: {label}"
    unit, scale = unit_for(kind, [cost[m][0] for m in have])
    xs = [cost[m][0] / scale for m in have]
    ys = [quality[m][0] for m in have]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for m, x, y in zip(have, xs, ys):
        ax.errorbar(x, y, xerr=cost[m][1] / scale, yerr=quality[m][1], fmt="o", capsize=3, label=m)
        ax.annotate(m, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    front = pareto_front(list(zip(xs, ys)))
    if front:
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        ax.step(fx, fy, where="post", color="tab:red", linestyle="--", linewidth=1, label="Pareto frontier")
        ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="tab:red", linewidths=1.5)
    xlabel = f"{label} ({unit}, sum over {len(tasks)} task(s))"
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("average score over tasks")
    ax.set_title(title + ("\n(fallback axis: GPU energy not measured)" if fallback_note else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    missing = [m for m in scored if m not in have]
    caption = "Mean over seeds, error bars one std; the dashed line joins the Pareto-optimal methods."
    if fallback_note:
        caption += " " + fallback_note + "."
    if missing:
        caption += f" Not plotted (no {key}): {', '.join(missing)}."
    return Plot(name, title, _png(fig), caption=caption, xlabel=xlabel)


MEMORY_PARTS = (("mem_params_bytes", "parameters", "tab:blue"), ("mem_grads_bytes", "gradients", "tab:green"),
                ("mem_optimizer_bytes", "optimizer state", "tab:purple"),
                ("mem_activations_bytes", "saved activations", "tab:cyan"))


def peak_over_modelled(ok: pd.DataFrame) -> dict[str, float]:
    """Per method: measured CUDA peak ÷ mem_model_bytes, each run's own ratio averaged over its runs — the
    allocator's slack, the CUDA context and kernel workspaces, which the accounting leaves out."""
    out = {}
    for m in dict.fromkeys(ok["method"]):
        g = ok[ok["method"] == m]
        if "train.peak_gpu_mem_bytes" not in g or "mem_model_bytes" not in g:
            continue
        pairs = g[["train.peak_gpu_mem_bytes", "mem_model_bytes"]].apply(pd.to_numeric, errors="coerce").dropna()
        pairs = pairs[pairs["mem_model_bytes"] > 0]
        if len(pairs):
            out[m] = float((pairs["train.peak_gpu_mem_bytes"] / pairs["mem_model_bytes"]).mean())
    return out


def memory_bars(ok: pd.DataFrame, backbone: str) -> Plot:
    """READ Figure 1 (middle): training memory per method, stacked by what holds it (parameters, gradients,
    optimizer state, saved activations: the accounting's parts), and CUDA's measured peak beside it."""
    name, title = f"memory_{slug(backbone)}.png", f"Training memory by part — {backbone}"
    tasks = sorted(ok["task"].unique())
    methods = list(dict.fromkeys(ok["method"]))
    model = {m: _method_means(ok[ok["method"] == m], "mem_model_bytes", tasks, "mean") for m in methods}
    parts = {m: [_method_means(ok[ok["method"] == m], key, tasks, "mean")[0] for key, _, _ in MEMORY_PARTS]
             for m in methods}
    cuda = {m: _method_means(ok[ok["method"] == m], "train.peak_gpu_mem_bytes", tasks, "mean") for m in methods}
    if all(v[0] is None for v in model.values()) and all(v[0] is None for v in cuda.values()):
        return Plot(name, title, why="neither mem_model_bytes nor a CUDA peak was recorded: "
                    + "; ".join(null_reasons(ok, "mem_model_bytes")))
    unit, scale = unit_for("bytes", [v[0] for v in [*model.values(), *cuda.values()] if v[0] is not None])
    any_cuda = any(v[0] is not None for v in cuda.values())
    width = 0.38 if any_cuda else 0.6
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(methods) + 2), 4.2))
    for i, m in enumerate(methods):
        x = i - (width / 2 if any_cuda else 0)
        if all(v is not None for v in parts[m]):
            bottom = 0.0
            for value, (_, label, color) in zip(parts[m], MEMORY_PARTS):
                ax.bar(x, value / scale, width, bottom=bottom, color=color, label=label)
                bottom += value / scale
        elif model[m][0] is not None:  # rows from before the parts were recorded: the total alone
            ax.bar(x, model[m][0] / scale, width, yerr=model[m][1] / scale, color="tab:gray", capsize=3,
                   label="mem_model_bytes (parts not recorded)")
        if cuda[m][0] is not None:
            ax.bar(i + width / 2, cuda[m][0] / scale, width, yerr=cuda[m][1] / scale, color="tab:orange",
                   capsize=3, label="CUDA peak (measured)")
    ax.set_xticks(list(range(len(methods))), methods, rotation=20, ha="right")
    ax.set_ylabel(f"{unit} (mean over tasks and seeds)")
    sub = "" if any_cuda else "\n(CUDA peak not measured on this machine)"
    ax.set_title(title + sub, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    caption = ("Stacked: mem_model_bytes by part — parameters, gradients, optimizer state, saved activations "
               "(modelled, deterministic).")
    ratios = peak_over_modelled(ok)
    if ratios:
        caption += " Measured CUDA peak ÷ modelled bytes (allocator slack, CUDA context, workspaces): " + ", ".join(
            f"{m} {r:.2f}" for m, r in ratios.items()) + "."
    if not any_cuda:
        caption += " CUDA peak not shown: " + ("; ".join(null_reasons(ok, "train.peak_gpu_mem_bytes")) or NOT_RECORDED)
    return Plot(name, title, _png(fig), caption=caption)


def read_vs_counter(ok: pd.DataFrame) -> Plot:
    """READ's utilization × p0 estimate against NVML's energy counter, one point per run."""
    name, title = "read_estimate_vs_counter.png", "READ's energy estimate vs NVML counter (per run)"
    cols = ["train.gpu_energy_kwh", "train.gpu_energy_read_kwh"]
    sub = ok.copy()
    for c in cols:
        sub[c] = pd.to_numeric(sub[c], errors="coerce") if c in sub.columns else float("nan")
    both = sub.dropna(subset=cols)
    if both.empty:
        why = []
        for c in cols:
            why += [f"{c}: {r}" for r in null_reasons(ok, c)]
        return Plot(name, title, why="no run has both the counter and READ's estimate — " + "; ".join(why))
    unit, scale = unit_for("energy", list(both[cols[0]]) + list(both[cols[1]]))
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for m, g in both.groupby("method", sort=False):
        ax.scatter(g[cols[0]] / scale, g[cols[1]] / scale, label=m, s=24)
    hi = max(both[cols[0]].max(), both[cols[1]].max()) / scale
    ax.plot([0, hi * 1.05], [0, hi * 1.05], color="grey", linestyle="--", linewidth=1, label="estimate = counter")
    ax.set_xlabel(f"NVML energy counter ({unit})")
    ax.set_ylabel(f"READ estimate Σ u/100 · p0 · Δt ({unit})")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    err = 100 * (both[cols[1]] - both[cols[0]]) / both[cols[0]]
    caption = (f"{len(both)} run(s); READ's estimate deviates from the counter by {err.mean():+.1f}% on average "
               f"(min {err.min():+.1f}%, max {err.max():+.1f}%).")
    return Plot(name, title, _png(fig), caption=caption)


# --------------------------------------------------------------------------- budget heatmaps

BUDGET_KEYS = ("budget", "rank_pattern")


def live_ranks(method_info: dict | None) -> dict[str, float] | None:
    """Matrix name → live rank from a row's method_info (dydora's ``budget``, adalora's ``rank_pattern``).

    A value may be the rank itself, or a per-component mask/gate list (peft's AdaLoRA ``rank_pattern`` keeps
    a list of booleans), whose non-zero entries are the live rank. One level of nesting
    (``{"live_ranks": {...}}``) is accepted.
    """
    if not isinstance(method_info, dict):
        return None
    for key in BUDGET_KEYS:
        val = method_info.get(key)
        if isinstance(val, dict):
            for inner in ("live_ranks", "ranks", "rank_pattern"):
                if isinstance(val.get(inner), dict):
                    val = val[inner]
                    break
            out = {}
            for name, v in val.items():
                if isinstance(v, bool):
                    continue
                if isinstance(v, (int, float)):
                    out[str(name)] = float(v)
                elif isinstance(v, list) and all(isinstance(x, (bool, int, float)) for x in v):
                    out[str(name)] = float(sum(1 for x in v if x))
            if out:
                return out
    return None


def _short_names(names: list[str]) -> list[str]:
    """Drop the dotted prefix every name shares (``base_model.model.``) so labels stay readable."""
    if len(names) < 2:
        return names
    parts = [n.split(".") for n in names]
    k = 0
    while all(len(p) > k + 1 for p in parts) and len({p[k] for p in parts}) == 1:
        k += 1
    return [".".join(p[k:]) for p in parts]


def budget_heatmaps(rows: list[dict]) -> list[Plot]:
    """One heatmap per (backbone, method) whose rows report live ranks: matrices × tasks, mean over seeds."""
    found: dict[tuple[str, str], list[tuple[str, dict[str, float]]]] = {}
    for r in rows:
        if r.get("status") != "ok":
            continue
        ranks = live_ranks(r.get("method_info"))
        if ranks:
            found.setdefault((r["backbone"], r["method"]), []).append((r["task"], ranks))
    plots = []
    for (backbone, method), items in found.items():
        tasks = sorted({t for t, _ in items})
        names = list(dict.fromkeys(n for _, ranks in items for n in ranks))
        grid = pd.DataFrame(index=names, columns=tasks, dtype=float)
        for t in tasks:
            per = pd.DataFrame([ranks for task, ranks in items if task == t])
            grid[t] = per.mean(axis=0).reindex(names)
        labels = _short_names(names)
        h = min(40.0, 1.6 + 0.22 * len(names))
        fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(tasks) + 3.5), h))
        im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), labels, fontsize=7 if len(names) < 60 else 5)
        if len(names) * len(tasks) <= 240:
            for i in range(len(names)):
                for j in range(len(tasks)):
                    v = grid.iat[i, j]
                    if not math.isnan(v):  # dark text on the bright end of viridis, white on the dark end
                        ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=6,
                                color="black" if im.norm(v) > 0.6 else "white")
        fig.colorbar(im, ax=ax, label="live rank (mean over seeds)")
        title = f"Where the budget went — {method} on {backbone}"
        ax.set_title(title, fontsize=10)
        total = grid.sum(axis=0)
        caption = ("Live rank per adapted matrix at the end of training; total per task: "
                   + ", ".join(f"{t} {total[t]:.3g}" for t in tasks) + ".")
        plots.append(Plot(f"budget_{slug(backbone)}_{slug(method)}.png", title, _png(fig), caption=caption))
    return plots
