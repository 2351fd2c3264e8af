"""results.jsonl → pandas → report.md / report.csv / efficiency.csv / report.html / PNG figures.

Tables follow READ (arXiv 2305.15348): Table 1 (quality: per-task score,
average, trainable %, training GPU energy) and Table 3 (efficiency: energy —
NVML's counter and READ's estimate side by side — memory, latency, FLOPs),
each relative to a baseline method (full fine-tuning by default), as mean ±
std over seeds, one section per backbone. Figures follow READ's Figure 1.
A figure that is null is shown as "—" with a footnote saying why; failed
runs are listed, never silently dropped. Several run directories combine
into one report; numbers use the latest row of each run in each directory.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from energybench.report.safe import csv_text, md_text
from energybench.report.tables import (
    PROVENANCE,
    REASON,
    Footnotes,
    Table,
    efficiency_table,
    footnotes_markdown,
    quality_table,
    resolve_baseline,
    table_markdown,
)
from energybench.results import (
    SCHEMA_VERSION,
    ResultsWriteError,
    first_nonfinite,
    latest_by_run,
    read_numbered_rows,
    write_file_atomic,
)

FORMATS = ("md", "csv", "html", "png")
DEFAULT_BASELINE = "full_ft"


# --------------------------------------------------------------------------- loading


REQUIRED = ("run_id", "backbone", "task", "method", "seed", "status")


def _checked(where: str, r: dict) -> dict:
    """A row the report can use, or a ValueError naming file:line (exit code 2, never a traceback later)."""
    version = r.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
        raise ValueError(f"{where}: row schema version {version!r} is not one this energybench reads "
                         f"(up to {SCHEMA_VERSION}); upgrade energybench")
    missing = [k for k in REQUIRED if r.get(k) is None]
    if missing:
        raise ValueError(f"{where}: result row lacks {', '.join(missing)}; fix or remove that line")
    bad = first_nonfinite(r)
    if bad:
        raise ValueError(f"{where}: {bad} is not a finite number; a result figure is a number or null")
    return r


def load_rows(run_dirs: Iterable[str | Path]) -> list[dict]:
    """The latest row of every run in each directory, tagged with ``source`` (the directory)."""
    rows = []
    for d in run_dirs:
        checked = [_checked(where, r) for where, r in read_numbered_rows(d)]
        for r in latest_by_run(checked).values():
            rows.append({**r, "source": str(d)})
    return rows


def _host_energy(flat: dict) -> None:
    """train.host_energy_kwh = CPU + RAM energy (both CodeCarbon); null with their reasons if either is."""
    cpu, ram = "train.cpu_energy_kwh", "train.ram_energy_kwh"
    if cpu not in flat and ram not in flat:
        return
    key = "train.host_energy_kwh"
    if flat.get(cpu) is not None and flat.get(ram) is not None:
        flat[key] = flat[cpu] + flat[ram]
        provs = {flat.get(PROVENANCE + cpu), flat.get(PROVENANCE + ram)}
        flat[PROVENANCE + key] = "estimated" if "estimated" in provs else (flat.get(PROVENANCE + cpu) or "measured")
    else:
        flat[key] = None
        flat[PROVENANCE + key] = "unavailable"
    why = [flat[REASON + k] for k in (cpu, ram) if isinstance(flat.get(REASON + k), str)]
    if why:
        flat[REASON + key] = "; ".join(dict.fromkeys(why))


def flatten_row(r: dict) -> dict:
    """Scalars of a row; window figures as ``<window>.<field>``, accounting figures bare, and beside each
    figure its ``provenance:<name>`` and ``reason:<name>`` (why it is null, or how it was estimated)."""
    flat = {k: v for k, v in r.items() if not isinstance(v, (dict, list))}

    def figures(prefix: str, figs: dict) -> None:
        for k, v in figs.items():
            if not isinstance(v, (dict, list)):
                flat[prefix + k] = v
        for k, v in (figs.get("provenance") or {}).items():
            flat[PROVENANCE + prefix + k] = v
        for k, v in (figs.get("reasons") or {}).items():
            flat[REASON + prefix + k] = v

    for w, figs in (r.get("windows") or {}).items():
        if isinstance(figs, dict):
            figures(f"{w}.", figs)
    figures("", r.get("accounting") or {})
    _unshare(flat, r)
    _host_energy(flat)
    return flat


SHARED_HOST = ("cpu_energy_kwh", "ram_energy_kwh", "energy_kwh", "emissions_kg")
SHARED_GPU = ("gpu_energy_kwh", "gpu_energy_read_kwh", "energy_kwh", "emissions_kg")


def _unshare(flat: dict, r: dict) -> None:
    """A figure shared with runs side by side (the whole machine's CPU/RAM energy, a shared GPU's counter) is not
    this run's: null with the reason, so no table sums it as if each run had used it alone."""
    detail = r.get("executor_detail") if isinstance(r.get("executor_detail"), dict) else {}
    for w, figs in (r.get("windows") or {}).items():
        if not isinstance(figs, dict):
            continue
        if r.get("host_shared_with_concurrent_runs") and figs.get("host_energy_scope") != "process":
            n = detail.get("max_runs_on_host_at_once") or "several"
            for k in SHARED_HOST:
                if flat.get(f"{w}.{k}") is not None:
                    flat[f"{w}.{k}"] = None
                    flat[PROVENANCE + f"{w}.{k}"] = "shared"
                    flat[REASON + f"{w}.{k}"] = (f"shared: {n} runs were on the host at once and CodeCarbon measured "
                                                 "the whole machine, so it is not this run's own")
        if r.get("gpu_shared_with_concurrent_runs"):
            n = detail.get("max_runs_on_gpu_at_once") or "several"
            for k in SHARED_GPU:
                if flat.get(f"{w}.{k}") is not None:
                    flat[f"{w}.{k}"] = None
                    flat[PROVENANCE + f"{w}.{k}"] = "shared"
                    flat[REASON + f"{w}.{k}"] = (f"shared: {n} runs were on its GPU at once; the board's counter "
                                                 "is not this run's own")


def load_frame(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run (latest attempt per directory), window figures flattened as ``<window>.<field>``."""
    return frame_from_rows(load_rows(run_dirs))


def frame_from_rows(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([flatten_row(r) for r in rows])


def _suites(run_dirs: Iterable[str | Path]) -> Iterator[dict]:
    """Each run directory's suite.json (what ``energybench run`` saved), where present and readable."""
    for d in run_dirs:
        p = Path(d) / "suite.json" if Path(d).is_dir() else Path(d).with_name("suite.json")
        try:
            yield json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue


def latency_batch_sizes(run_dirs: Iterable[str | Path]) -> set[int]:
    """The suites' latency batch sizes, from each run directory's suite.json where present."""
    sizes = set()
    for suite in _suites(run_dirs):
        try:
            sizes.add(int(suite["measure"]["latency_batch_size"]))
        except (KeyError, TypeError, ValueError):
            continue
    return sizes


def in_suite_order(frame: pd.DataFrame, run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Rows sorted by their method's place in the suites' method lists (then as they came).

    results.jsonl holds runs in the order they finished, which with ``--jobs`` or Ray depends on
    timing; a report's rows must not. Methods no suite.json lists keep their order, after the others.
    """
    labels = [m.get("label") or m.get("name") for s in _suites(run_dirs) for m in s.get("methods", [])
              if isinstance(m, dict)]
    rank = {label: i for i, label in reversed(list(enumerate(labels)))}
    if not rank or frame.empty:
        return frame
    key = frame["method"].map(rank).fillna(len(rank))
    return frame.iloc[key.argsort(kind="stable")].reset_index(drop=True)


# --------------------------------------------------------------------------- content


@dataclass
class BackboneSection:
    backbone: str
    tables: list[Table]
    plots: list = field(default_factory=list)


@dataclass
class Report:
    title: str
    intro: list[str]
    sections: list[BackboneSection]
    extra_plots: list = field(default_factory=list)  # across backbones: READ vs counter, budget heatmaps
    failed: pd.DataFrame | None = None


def build_report(frame: pd.DataFrame, rows: list[dict], run_dirs: list, baseline_method: str = DEFAULT_BASELINE,
                 plots: bool = True) -> Report:
    trials = frame["role"] == "trial" if "role" in frame.columns else pd.Series(False, index=frame.index)
    frame = frame[~trials]  # search trials have their own table (report/target.py)
    ok = frame[frame["status"] == "ok"]
    failed = frame[frame["status"] != "ok"]
    suites = ", ".join(sorted(frame["suite"].astype(str).unique()))
    intro = [f"Runs: {len(frame)} from {', '.join(map(str, run_dirs))} — {len(ok)} finished, {len(failed)} failed. "
             f"\"% of\" columns are relative to `{baseline_method}` (--baseline-method)."]
    sizes = latency_batch_sizes(run_dirs)
    if sizes:
        intro.append(f"Inference latency batch size: {', '.join(map(str, sorted(sizes)))} (READ: 1).")
    dup = frame.groupby("run_id")["source"].nunique() if "source" in frame else pd.Series(dtype=int)
    if trials.any():
        intro.append(f"Learning-rate search: {int(trials.sum())} trial run(s), in the Learning-rate search table "
                     "(not in the other tables).")
    if (dup > 1).any():
        intro.append(f"{int((dup > 1).sum())} run(s) appear in more than one directory; each copy counts as a "
                     "sample of its seed (their mean is used).")
    sections = []
    for backbone, g in ok.groupby("backbone", sort=False):
        base = resolve_baseline(g, baseline_method)
        sec = BackboneSection(str(backbone), [quality_table(g, base, baseline_method),
                                              efficiency_table(g, base, baseline_method)])
        if plots:
            from energybench.report import plots as P

            sec.plots = [P.quality_vs_cost(g, str(backbone)), P.memory_bars(g, str(backbone))]
        _target_and_search(sec, g, rows, base, baseline_method, plots)
        sections.append(sec)
    extra = []
    if plots and not ok.empty:
        from energybench.report import plots as P

        extra = [P.read_vs_counter(ok), *P.budget_heatmaps(rows)]
    return Report(f"energybench report: {suites}", intro, sections, extra, failed)


def _target_and_search(sec: BackboneSection, ok: pd.DataFrame, rows: list[dict], base: str | None,
                       baseline_method: str, plots: bool) -> None:
    """Cost to target (where the suite had a target) and the search table (where it searched), for one backbone."""
    from energybench.report import target as T

    mine = [r for r in rows if r.get("backbone") == sec.backbone]
    tt = T.target_frame(mine)
    if not tt.empty:
        sec.tables.append(T.cost_to_target_table(tt, base, baseline_method))
    sf = T.search_frame(mine)
    if not sf.empty:
        sec.tables.append(T.search_table(sf, base))
    if plots:
        from energybench.report import curves as C

        sec.plots.append(C.learning_curves(rows, sec.backbone))
        if not tt.empty:
            sec.plots.append(C.quality_vs_cost_to_target(tt, ok, sec.backbone))


# --------------------------------------------------------------------------- writers


def failed_markdown(failed: pd.DataFrame) -> str:
    if failed is None or failed.empty:
        return ""
    lines = ["### Failed runs", "", "| Backbone | Task | Method | Seed | Error |", "|---|---|---|---|---|"]
    for _, r in failed.iterrows():
        cells = [r["backbone"], r["task"], r["method"], r["seed"], r.get("error") or ""]
        lines.append("| " + " | ".join(md_text(c) for c in cells) + " |")
    return "\n".join(lines)


def _plot_md(p, link: bool) -> list[str]:
    if p.png is None:
        return [f"- **{p.title}**: not drawn — {p.why}", ""]
    if not link:
        return []
    return [f"![{p.title}]({p.name})", "", f"*{p.caption}*", ""]


def report_markdown(rep: Report, link_plots: bool) -> str:
    notes = Footnotes()
    out = [f"# {md_text(rep.title)}", "", *[md_text(line) + "  " for line in rep.intro], ""]
    for sec in rep.sections:
        out += [f"## Backbone: {md_text(sec.backbone)}", ""]
        for t in sec.tables:
            out += [f"### {t.title}", "", t.caption, "", table_markdown(t, notes), ""]
        figs = [line for p in sec.plots for line in _plot_md(p, link_plots)]
        if figs:
            out += ["### Figures", "", *figs]
    if not rep.sections:
        out += ["No run finished successfully.", ""]
    extra = [line for p in rep.extra_plots for line in _plot_md(p, link_plots)]
    if extra:
        out += ["## Across backbones", "", *extra]
    out += [failed_markdown(rep.failed), "", footnotes_markdown(notes)]
    return "\n".join(out).rstrip() + "\n"


def report_html(rep: Report) -> str:
    from energybench.report.html import Section, render_page

    sections = [Section(f"Backbone: {s.backbone}", s.tables, s.plots) for s in rep.sections]
    if not rep.sections:
        sections.append(Section("No run finished successfully"))
    if rep.extra_plots:
        sections.append(Section("Across backbones", plots=rep.extra_plots))
    tail = []
    if rep.failed is not None and not rep.failed.empty:
        body = "".join(f"<tr><td>{escape(str(r['backbone']))}</td><td>{escape(str(r['task']))}</td>"
                       f"<td>{escape(str(r['method']))}</td><td>{escape(str(r['seed']))}</td>"
                       f"<td>{escape(str(r.get('error') or ''))}</td></tr>" for _, r in rep.failed.iterrows())
        tail.append("<h2>Failed runs</h2><table class='failed'><thead><tr><th>Backbone</th><th>Task</th>"
                    f"<th>Method</th><th>Seed</th><th>Error</th></tr></thead><tbody>{body}</tbody></table>")
    return render_page(rep.title, [f"<p>{escape(line)}</p>" for line in rep.intro], sections, tail)


def write_report(run_dirs: list[str | Path], out_dir: str | Path | None = None,
                 formats: tuple[str, ...] = ("md", "csv"), baseline_method: str = DEFAULT_BASELINE) -> list[Path]:
    """Write the report files for ``run_dirs`` into ``out_dir`` (default: the first run dir).

    ``formats``: md (report.md), csv (report.csv = quality table, efficiency.csv, runs.csv), html
    (report.html, self-contained), png (one file per figure; report.md links them).
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown report format(s) {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}")
    run_dirs = list(run_dirs)
    rows = load_rows(run_dirs)
    frame = in_suite_order(frame_from_rows(rows), run_dirs)
    out = Path(out_dir or run_dirs[0])
    if out.suffix == ".jsonl":
        out = out.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsWriteError(f"{out}: cannot create the report folder ({exc.strerror or exc})") from None
    if frame.empty:
        raise ValueError(f"{', '.join(map(str, run_dirs))}: results.jsonl holds no runs yet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rep = build_report(frame, rows, run_dirs, baseline_method, plots="png" in formats or "html" in formats)
    written = []
    if "md" in formats:
        written.append(write_file_atomic(out / "report.md", report_markdown(rep, link_plots="png" in formats)))
    if "csv" in formats:
        for name, idx in (("report.csv", 0), ("efficiency.csv", 1)):
            parts = [t.tables[idx].export.assign(backbone=t.backbone) for t in rep.sections]
            df = pd.concat(parts) if parts else pd.DataFrame()
            if not df.empty:
                df = df[["backbone", *[c for c in df.columns if c != "backbone"]]]
            written.append(write_file_atomic(out / name, csv_text(df)))
        extra: dict[str, list[pd.DataFrame]] = {}
        for sec in rep.sections:  # cost_to_target.csv, learning_rate_search.csv where the suite had them
            for t in sec.tables[2:]:
                extra.setdefault(t.title.lower().replace(" ", "_").replace("-", "_"), []).append(
                    t.export.assign(backbone=sec.backbone))
        for name, parts in extra.items():
            written.append(write_file_atomic(out / f"{name}.csv", csv_text(pd.concat(parts))))
        written.append(write_file_atomic(out / "runs.csv", csv_text(frame)))
    if "html" in formats:
        written.append(write_file_atomic(out / "report.html", report_html(rep)))
    if "png" in formats:
        for plot in [pl for s in rep.sections for pl in s.plots] + rep.extra_plots:
            if plot.png is not None:
                written.append(write_file_atomic(out / plot.name, plot.png))
    return written
