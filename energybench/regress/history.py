"""History of finished suites in one SQLite file, to follow a figure across commits.

``history add RUN_DIR`` records every row of the run directory's
results.jsonl together with the git commit of the project under test (``git
rev-parse HEAD`` in the current directory; null outside a repository) and
the environment the rows report (package versions, devices). A row is
identified by the hash of its content, so adding the same directory twice
records nothing new; a directory that gained runs records only those.

The schema is versioned: ``schema_version`` holds every version applied, and
``MIGRATIONS`` upgrade an older file in order, each in one transaction,
never dropping what earlier versions stored. Version 1 kept rows as JSON;
version 2 added the environment and dirty-tree flag of each addition and a
``metrics`` table (one numeric figure per row and name) back-filled from the
stored rows.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from energybench.results import read_rows

SCHEMA_VERSION = 2
DB_NAME = "history.sqlite"


class HistoryError(ValueError):
    """The history database cannot be used as asked (exit code 2)."""


def default_db_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("energybench")) / DB_NAME


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _script(conn: sqlite3.Connection, sql: str) -> None:
    """Run ``;``-separated statements inside the caller's transaction (``executescript`` would commit first)."""
    for stmt in sql.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def _v1(conn: sqlite3.Connection) -> None:
    _script(conn, """
        CREATE TABLE additions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            added_at TEXT NOT NULL,
            run_dir TEXT NOT NULL,
            suite TEXT,
            git_commit TEXT
        );
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            addition_id INTEGER NOT NULL REFERENCES additions(id),
            row_sha TEXT NOT NULL UNIQUE,
            run_id TEXT NOT NULL,
            suite TEXT, backbone TEXT, task TEXT, method TEXT, method_name TEXT, seed INTEGER,
            status TEXT, finished_at TEXT,
            row_json TEXT NOT NULL
        );
    """)


def _v2(conn: sqlite3.Connection) -> None:
    _script(conn, """
        ALTER TABLE additions ADD COLUMN environment_json TEXT;
        ALTER TABLE additions ADD COLUMN git_dirty INTEGER;
        CREATE TABLE metrics (
            run_pk INTEGER NOT NULL REFERENCES runs(id),
            name TEXT NOT NULL,
            value REAL,
            provenance TEXT,
            PRIMARY KEY (run_pk, name)
        );
        CREATE INDEX metrics_by_name ON metrics(name);
        CREATE INDEX runs_by_method ON runs(method, backbone, task);
    """)
    by_addition: dict[int, list[dict]] = {}
    for pk, addition_id, row_json in conn.execute("SELECT id, addition_id, row_json FROM runs").fetchall():
        row = json.loads(row_json)
        _insert_metrics(conn, pk, row)
        by_addition.setdefault(addition_id, []).append(row)
    for addition_id, rows in by_addition.items():
        conn.execute("UPDATE additions SET environment_json = ? WHERE id = ?",
                     (json.dumps(environment_summary(rows), sort_keys=True), addition_id))


MIGRATIONS: list[tuple[int, Callable[[sqlite3.Connection], None]]] = [(1, _v1), (2, _v2)]


def schema_version(conn: sqlite3.Connection) -> int:
    has = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
    if not has:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to ``SCHEMA_VERSION``; each step commits with its version number or not at all."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise HistoryError(f"the history database has schema version {current}, newer than this energybench "
                           f"understands ({SCHEMA_VERSION}); upgrade energybench")
    if current == 0:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version "
                     "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for version, step in MIGRATIONS:
        if version <= current:
            continue
        try:
            conn.execute("BEGIN")
            step(conn)
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, _now()))
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION


def connect(path: str | Path | None = None) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the history database at ``path`` (default: the user data dir)."""
    path = Path(path) if path else default_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, isolation_level=None)  # explicit transactions only
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        raise HistoryError(f"{path}: not a usable energybench history database ({exc})") from None
    return conn


# --------------------------------------------------------------------------- add


def row_sha(row: dict) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def numeric_figures(row: dict) -> dict[str, tuple[float | None, str | None]]:
    """Every figure of a row as name → (value, provenance): accounting and top-level figures by their bare
    name (``mem_model_bytes``, ``score``), window figures as ``<window>.<field>`` — the report's names.
    A null figure is kept (value None) when the row says how it came to be null. Cost-to-target figures
    (``to_target_steps``, ``to_target_energy_kwh`` …, the compare metrics of that name) are kept when the run
    reached its target: a trend then shows what reaching it cost over commits."""
    from energybench.regress.metrics import METRICS
    from energybench.report.build import flatten_row
    from energybench.report.tables import PROVENANCE

    flat = flatten_row(row)
    out: dict[str, tuple[float | None, str | None]] = {}
    for k, v in flat.items():
        if k.startswith(("reason:", PROVENANCE)) or k in ("seed", "schema_version") or isinstance(v, bool):
            continue
        if v is None:
            if PROVENANCE + k in flat:
                out[k] = (None, flat[PROVENANCE + k])
        elif isinstance(v, (int, float)):
            out[k] = (float(v), flat.get(PROVENANCE + k))
    point = row.get("to_target") if isinstance(row.get("to_target"), dict) else {}
    for name, metric in METRICS.items():
        if metric.section == "to_target":
            value, _reason = metric.value(row)
            if value is not None:
                out[name] = (value, (point.get("provenance") or {}).get(metric.field, "measured"))
    return out


def _insert_metrics(conn: sqlite3.Connection, run_pk: int, row: dict) -> None:
    conn.executemany("INSERT OR REPLACE INTO metrics (run_pk, name, value, provenance) VALUES (?, ?, ?, ?)",
                     [(run_pk, k, v, p) for k, (v, p) in numeric_figures(row).items()])


def environment_summary(rows: list[dict]) -> dict[str, list[str]]:
    """Each environment key (package versions, device, device name) → the distinct values the rows report."""
    env: dict[str, set[str]] = {}
    for r in rows:
        for k, v in (r.get("environment") or {}).items():
            if v is not None:
                env.setdefault(k, set()).add(str(v))
    return {k: sorted(v) for k, v in sorted(env.items())}


@dataclass
class AddSummary:
    addition_id: int | None  # None when nothing new was recorded
    new_rows: int
    known_rows: int
    git_commit: str | None


def add_run_dir(conn: sqlite3.Connection, run_dir: str | Path, commit: str | None = None,
                dirty: bool | None = None) -> AddSummary:
    """Record the rows of ``run_dir`` not yet in the database, as one addition (one transaction)."""
    rows = read_rows(run_dir)
    if not rows:
        raise HistoryError(f"{run_dir}: results.jsonl holds no runs")
    fresh = []
    for r in rows:
        sha = row_sha(r)
        if not conn.execute("SELECT 1 FROM runs WHERE row_sha = ?", (sha,)).fetchone():
            fresh.append((sha, r))
    if not fresh:
        return AddSummary(None, 0, len(rows), commit)
    conn.execute("BEGIN")
    try:
        cur = conn.execute(
            "INSERT INTO additions (added_at, run_dir, suite, git_commit, git_dirty, environment_json) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (_now(), str(Path(run_dir).resolve()), ", ".join(sorted({str(r.get("suite")) for _, r in fresh})), commit,
             None if dirty is None else int(dirty), json.dumps(environment_summary([r for _, r in fresh]),
                                                                sort_keys=True)))
        addition_id = cur.lastrowid
        for sha, r in fresh:
            cur = conn.execute(
                "INSERT INTO runs (addition_id, row_sha, run_id, suite, backbone, task, method, method_name, seed, "
                "status, finished_at, row_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (addition_id, sha, r.get("run_id"), r.get("suite"), r.get("backbone"), r.get("task"), r.get("method"),
                 r.get("method_name"), r.get("seed"), r.get("status"), r.get("finished_at"),
                 json.dumps(r, sort_keys=True, default=str)))
            _insert_metrics(conn, cur.lastrowid, r)
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return AddSummary(addition_id, len(fresh), len(rows) - len(fresh), commit)


# --------------------------------------------------------------------------- show


@dataclass
class TrendPoint:
    addition_id: int
    added_at: str
    git_commit: str | None
    backbone: str
    task: str
    method: str
    n: int
    mean: float | None
    std: float | None


def metric_names(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT name FROM metrics ORDER BY name")]


def resolve_metric(conn: sqlite3.Connection, name: str) -> str:
    """A stored figure name; compare's short names (``gpu_energy_kwh``) map to their window (``train.…``)."""
    known = set(metric_names(conn))
    if name in known:
        return name
    from energybench.regress.metrics import METRICS

    m = METRICS.get(name)
    if m is not None:
        full = m.field if m.section in ("row", "accounting") else f"{m.section}.{m.field}"
        if full in known:
            return full
    raise HistoryError(f"--metric {name!r}: no such figure in the history"
                       + (f"; recorded figures: {', '.join(sorted(known))}" if known else " (the history is empty)"))


def trend(conn: sqlite3.Connection, metric: str, method: str | None = None, backbone: str | None = None,
          task: str | None = None) -> list[TrendPoint]:
    """Per addition and (backbone, task, method): mean and std over the ok runs' values, oldest first."""
    sql = ("SELECT a.id, a.added_at, a.git_commit, r.backbone, r.task, r.method, r.run_id, r.id, m.value "
           "FROM runs r JOIN additions a ON a.id = r.addition_id "
           "JOIN metrics m ON m.run_pk = r.id AND m.name = ? WHERE r.status = 'ok'")
    args: list = [metric]
    for col, val in (("r.method", method), ("r.backbone", backbone), ("r.task", task)):
        if val is not None:
            sql += f" AND {col} = ?"
            args.append(val)
    sql += " ORDER BY a.id, r.backbone, r.task, r.method, r.id"
    groups: dict[tuple, dict] = {}
    for aid, added, commit, bb, tk, me, run_id, _pk, value in conn.execute(sql, args):
        g = groups.setdefault((aid, bb, tk, me), {"added": added, "commit": commit, "vals": {}})
        g["vals"][run_id] = value  # the latest row of a run within one addition wins
    out = []
    for (aid, bb, tk, me), g in groups.items():
        vals = [v for v in g["vals"].values() if v is not None]
        mean = sum(vals) / len(vals) if vals else None
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else None
        out.append(TrendPoint(aid, g["added"], g["commit"], bb, tk, me, len(vals), mean, std))
    return out


def trend_markdown(points: list[TrendPoint], metric: str) -> str:
    if not points:
        return f"No finished run in the history has {metric} for this selection.\n"
    lines = [f"## {metric} over time", "",
             "| Addition | Added (UTC) | Commit | Backbone | Task | Method | Runs | Mean | Std | Change vs previous |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    prev: dict[tuple, float | None] = {}
    for p in points:
        key = (p.backbone, p.task, p.method)
        before = prev.get(key)
        change = ("—" if before in (None, 0) or p.mean is None else f"{100 * (p.mean - before) / abs(before):+.2f}%")
        prev[key] = p.mean
        mean = "—" if p.mean is None else f"{p.mean:.6g}"
        std = "—" if p.std is None else f"{p.std:.3g}"
        lines.append(f"| {p.addition_id} | {p.added_at} | {(p.git_commit or 'unknown')[:10]} | {p.backbone} | "
                     f"{p.task} | {p.method} | {p.n} | {mean} | {std} | {change} |")
    return "\n".join(lines) + "\n"


def trend_png(points: list[TrendPoint], metric: str, path: str | Path) -> Path:
    """One line per (backbone, task, method) over additions, labelled by commit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    additions = sorted({(p.addition_id, p.git_commit) for p in points})
    xpos = {aid: i for i, (aid, _) in enumerate(additions)}
    fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(additions) + 3), 4.2))
    series: dict[tuple, list[TrendPoint]] = {}
    for p in points:
        if p.mean is not None:
            series.setdefault((p.backbone, p.task, p.method), []).append(p)
    for (bb, tk, me), ps in series.items():
        ax.errorbar([xpos[p.addition_id] for p in ps], [p.mean for p in ps],
                    yerr=[p.std or 0.0 for p in ps], marker="o", capsize=3, label=f"{me} · {tk} · {bb}")
    ax.set_xticks(range(len(additions)), [f"#{aid}\n{(c or 'unknown')[:7]}" for aid, c in additions], fontsize=8)
    ax.set_xlabel("history addition (commit)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} over time", fontsize=10)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path
