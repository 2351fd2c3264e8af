"""results.jsonl → pandas → report.md / report.csv (READ Table 1 style).

Rows are methods, columns each task's test score, their average, trainable
parameters (% of total) and training wall time, as mean ± std over seeds.
One section per backbone; failed runs are listed under the tables, never
silently dropped. Numbers are computed from the latest row of each run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from energybench.results import latest_by_run, read_rows


def load_frame(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run (latest attempt), window figures flattened as ``<window>.<field>``."""
    rows: list[dict] = []
    for d in run_dirs:
        for r in latest_by_run(read_rows(d)).values():
            flat = {k: v for k, v in r.items() if not isinstance(v, (dict, list))}
            for w, figs in (r.get("windows") or {}).items():
                for k, v in figs.items():
                    if not isinstance(v, (dict, list)):
                        flat[f"{w}.{k}"] = v
            for k, v in (r.get("accounting") or {}).items():
                if not isinstance(v, (dict, list)):
                    flat[k] = v
            flat["source"] = str(d)
            rows.append(flat)
    return pd.DataFrame(rows)


def _mean_std(series: pd.Series) -> tuple[float, float]:
    s = series.dropna().astype(float)
    return (float(s.mean()) if len(s) else float("nan"), float(s.std(ddof=1)) if len(s) > 1 else 0.0)


def quality_table(ok: pd.DataFrame) -> pd.DataFrame:
    """Per method: each task's score, the average, trainable %, training time (mean and std over seeds).

    The average is taken per seed over tasks, then its mean and std over seeds,
    as READ's Table 1 does.
    """
    tasks = sorted(ok["task"].unique())
    out = []
    for method, g in ok.groupby("method", sort=False):
        row: dict = {"method": method}
        for t in tasks:
            row[f"{t}_mean"], row[f"{t}_std"] = _mean_std(g.loc[g["task"] == t, "score"])
        per_seed = g.pivot_table(index="seed", columns="task", values="score")
        complete = per_seed.dropna()
        row["average_mean"], row["average_std"] = _mean_std(complete.mean(axis=1)) if len(complete) else (float("nan"), 0.0)
        pct = 100 * g["trainable_params"] / g["total_params"]
        row["trainable_pct_mean"], _ = _mean_std(pct)
        row["trainable_params"] = int(g["trainable_params"].median())
        row["train_time_s_mean"], row["train_time_s_std"] = _mean_std(g["train.wall_s"])
        row["runs"] = len(g)
        out.append(row)
    return pd.DataFrame(out)


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    if pd.isna(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def quality_markdown(table: pd.DataFrame, tasks: list[str]) -> str:
    header = ["Method", *tasks, "Avg.", "Trainable params (%)", "Train time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        cells = [r["method"], *(_fmt(r[f"{t}_mean"], r[f"{t}_std"]) for t in tasks),
                 _fmt(r["average_mean"], r["average_std"]),
                 f"{r['trainable_params']:,} ({r['trainable_pct_mean']:.3f}%)",
                 _fmt(r["train_time_s_mean"], r["train_time_s_std"], 1)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def failed_markdown(failed: pd.DataFrame) -> str:
    if failed.empty:
        return ""
    lines = ["### Failed runs", "", "| Backbone | Task | Method | Seed | Error |", "|---|---|---|---|---|"]
    for _, r in failed.iterrows():
        err = str(r.get("error") or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['backbone']} | {r['task']} | {r['method']} | {r['seed']} | {err} |")
    return "\n".join(lines)


def write_report(run_dirs: list[str | Path], out_dir: str | Path | None = None,
                 formats: tuple[str, ...] = ("md", "csv")) -> list[Path]:
    """Write the report files for ``run_dirs`` into ``out_dir`` (default: the first run dir)."""
    frame = load_frame(run_dirs)
    out = Path(out_dir or run_dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        raise ValueError(f"{', '.join(map(str, run_dirs))}: results.jsonl holds no runs yet")
    ok, failed = frame[frame["status"] == "ok"], frame[frame["status"] != "ok"]
    sections, tables = [f"# energybench report: {', '.join(sorted(frame['suite'].unique()))}", ""], []
    for backbone, g in ok.groupby("backbone", sort=False):
        tasks = sorted(g["task"].unique())
        table = quality_table(g)
        table.insert(0, "backbone", backbone)
        tables.append(table)
        sections += [f"## Backbone: {backbone}", "",
                     "Test-set score per task (GLUE metric, READ's split protocol), mean ± std over seeds.", "",
                     quality_markdown(table, tasks), ""]
    if ok.empty:
        sections += ["No run finished successfully.", ""]
    sections.append(failed_markdown(failed))
    written = []
    if "md" in formats:
        p = out / "report.md"
        p.write_text("\n".join(sections).rstrip() + "\n", encoding="utf-8")
        written.append(p)
    if "csv" in formats:
        p = out / "report.csv"
        (pd.concat(tables) if tables else pd.DataFrame()).to_csv(p, index=False)
        written.append(p)
        p = out / "runs.csv"
        frame.to_csv(p, index=False)
        written.append(p)
    return written
