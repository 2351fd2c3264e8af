"""The SQLite history: idempotent additions, the project's git commit, trends, and upgrades that keep old rows."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import matplotlib.image as mpimg
import pytest
from rowfactory import make_row, write_rows

from energybench.cli import main
from energybench.regress import git as history_git
from energybench.regress import history


def _count(db, table):
    with sqlite3.connect(db) as c:
        return c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def _run_dir(path, mem=1000, seeds=(0, 1), finished="2026-01-01T00:00:00+00:00"):
    return write_rows(path, [make_row(m, "a", s, accounting={"mem_model_bytes": mem + 10 * s + (m == "lora")},
                                      finished_at=finished,
                                      environment={"torch": "2.13.0+cpu", "device": "cpu", "peft": "0.21.2"})
                             for m in ("full_ft", "lora") for s in seeds])


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_adding_the_same_run_directory_twice_records_its_rows_once(tmp_path, cwd, capsys):
    db, run = tmp_path / "h.sqlite", _run_dir(tmp_path / "run")
    assert main(["history", "add", str(run), "--db", str(db)]) == 0
    assert main(["history", "add", str(run), "--db", str(db)]) == 0
    assert "nothing new" in capsys.readouterr().out
    assert _count(db, "runs") == 4 and _count(db, "additions") == 1
    # the directory gains a run: only that row is recorded, as a new addition
    write_rows(run, [make_row("lora", "a", 2, accounting={"mem_model_bytes": 7})])
    assert main(["history", "add", str(run), "--db", str(db)]) == 0
    assert _count(db, "runs") == 5 and _count(db, "additions") == 2


def test_an_addition_records_the_git_commit_of_the_current_directory_and_the_environment(tmp_path, cwd):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=cwd, check=True)
    (cwd / "f.txt").write_text("x")
    subprocess.run([*git, "add", "f.txt"], cwd=cwd, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "m"], cwd=cwd, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True).stdout.strip()
    db = tmp_path / "h.sqlite"
    assert main(["history", "add", str(_run_dir(tmp_path / "run")), "--db", str(db)]) == 0
    with sqlite3.connect(db) as c:
        commit, dirty, env = c.execute("SELECT git_commit, git_dirty, environment_json FROM additions").fetchone()
    assert commit == head and dirty == 0
    assert json.loads(env) == {"device": ["cpu"], "peft": ["0.21.2"], "torch": ["2.13.0+cpu"]}


def test_outside_a_git_work_tree_the_commit_is_null(tmp_path, cwd):
    db = tmp_path / "h.sqlite"
    if history_git.git_commit(cwd) is not None:
        pytest.skip("the temporary directory lies inside a git work tree")
    assert main(["history", "add", str(_run_dir(tmp_path / "run")), "--db", str(db)]) == 0
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT git_commit FROM additions").fetchone()[0] is None


def test_show_prints_the_trend_of_a_metric_and_plots_it(tmp_path, cwd, capsys):
    db = tmp_path / "h.sqlite"
    main(["history", "add", str(_run_dir(tmp_path / "r1", mem=1000)), "--db", str(db)])
    main(["history", "add", str(_run_dir(tmp_path / "r2", mem=1100, finished="2026-02-01T00:00:00+00:00")),
          "--db", str(db)])
    capsys.readouterr()
    png = tmp_path / "trend.png"
    assert main(["history", "show", "--metric", "mem_model_bytes", "--method", "lora", "--db", str(db),
                 "--png", str(png)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("| 1 ") or ln.startswith("| 2 ")]
    # lora's mem_model_bytes: seeds 0 and 1 → 1001 and 1011 (mean 1006), then 1101 and 1111 (mean 1106)
    assert "| lora | 2 | 1006 |" in lines[0] and "| lora | 2 | 1106 |" in lines[1]
    assert f"{100 * (1106 - 1006) / 1006:+.2f}%" in lines[1]
    assert all("full_ft" not in ln for ln in lines)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and mpimg.imread(png)[..., :3].std() > 0.02


def test_show_accepts_compare_metric_names_and_rejects_unknown_ones(tmp_path, cwd, capsys):
    db = tmp_path / "h.sqlite"
    run = write_rows(tmp_path / "run", [make_row("lora", "a", 0, train={"step_time_s": 0.25})])
    main(["history", "add", str(run), "--db", str(db)])
    capsys.readouterr()
    assert main(["history", "show", "--metric", "step_time_s", "--db", str(db)]) == 0
    assert "## train.step_time_s over time" in capsys.readouterr().out
    assert main(["history", "show", "--metric", "joules", "--db", str(db)]) == 2
    assert "no such figure" in capsys.readouterr().err


def test_show_trends_what_reaching_the_target_cost(tmp_path, cwd, capsys):
    """to_target_* figures live in the row's ``to_target`` point, not in a window: history keeps them too."""
    db = tmp_path / "h.sqlite"
    for i, steps in enumerate((300, 200)):
        rows = [make_row("lora", "a", s, finished_at=f"2026-0{i + 1}-01T00:00:00+00:00") for s in (0, 1)]
        for r, extra in zip(rows, (0, 100)):
            r["to_target"] = {"step": steps + extra, "examples": 16 * (steps + extra), "wall_s": 2.0, "val_score": 91.0}
        unreached = make_row("full_ft", "a", 0, finished_at=f"2026-0{i + 1}-01T00:00:00+00:00")
        unreached["to_target"], unreached["to_target_reason"] = None, "not reached (best 88.4 at step 1200)"
        main(["history", "add", str(write_rows(tmp_path / f"r{i}", rows + [unreached])), "--db", str(db)])
    capsys.readouterr()
    assert main(["history", "show", "--metric", "to_target_steps", "--db", str(db)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("| 1 ", "| 2 "))]
    # lora: steps 300 and 400 (mean 350), then 200 and 300 (mean 250); full_ft never reached it: no point
    assert "| lora | 2 | 350 |" in lines[0] and "| lora | 2 | 250 |" in lines[1]
    assert all("full_ft" not in ln for ln in lines)


V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);
CREATE TABLE additions (id INTEGER PRIMARY KEY AUTOINCREMENT, added_at TEXT NOT NULL, run_dir TEXT NOT NULL,
                        suite TEXT, git_commit TEXT);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, addition_id INTEGER NOT NULL REFERENCES additions(id),
                   row_sha TEXT NOT NULL UNIQUE, run_id TEXT NOT NULL, suite TEXT, backbone TEXT, task TEXT,
                   method TEXT, method_name TEXT, seed INTEGER, status TEXT, finished_at TEXT, row_json TEXT NOT NULL);
INSERT INTO schema_version VALUES (1, '2025-06-01T00:00:00+00:00');
INSERT INTO additions VALUES (1, '2025-06-01T00:00:00+00:00', '/old/run', 'quickstart', 'abc1234');
"""


def test_a_version_1_database_upgrades_to_the_current_schema_without_losing_history(tmp_path, cwd, capsys):
    db = tmp_path / "old.sqlite"
    old_rows = [make_row("lora", "a", s, accounting={"mem_model_bytes": 500 + s}) for s in (0, 1)]
    with sqlite3.connect(db) as c:
        c.executescript(V1_SCHEMA)
        for i, r in enumerate(old_rows):
            c.execute("INSERT INTO runs (addition_id, row_sha, run_id, suite, backbone, task, method, method_name, "
                      "seed, status, finished_at, row_json) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (f"sha-{i}", r["run_id"], r["suite"], r["backbone"], r["task"], r["method"], r["method_name"],
                       r["seed"], r["status"], r["finished_at"], json.dumps(r)))
    conn = history.connect(db)
    assert history.schema_version(conn) == history.SCHEMA_VERSION == 2
    assert [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")] == [1, 2]
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
    assert conn.execute("SELECT git_commit FROM additions WHERE id = 1").fetchone()[0] == "abc1234"
    # version 2's figures are back-filled from the rows version 1 stored
    values = sorted(v for (v,) in conn.execute("SELECT value FROM metrics WHERE name = 'mem_model_bytes'"))
    assert values == [500.0, 501.0]
    env = json.loads(conn.execute("SELECT environment_json FROM additions WHERE id = 1").fetchone()[0])
    assert env["device"] == ["cpu"]
    conn.close()
    # and the old history is still shown after new additions
    main(["history", "add", str(_run_dir(tmp_path / "new", mem=600)), "--db", str(db)])
    capsys.readouterr()
    assert main(["history", "show", "--metric", "mem_model_bytes", "--method", "lora", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "| 1 | 2025-06-01T00:00:00+00:00 | abc1234 |" in out and "| 500.5 |" in out


def test_a_failing_migration_leaves_the_database_at_its_previous_version(tmp_path, monkeypatch):
    db = tmp_path / "h.sqlite"
    history.connect(db).close()

    def broken(conn):
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(history, "MIGRATIONS", [*history.MIGRATIONS, (3, broken)])
    monkeypatch.setattr(history, "SCHEMA_VERSION", 3)
    with pytest.raises(RuntimeError, match="migration bug"):
        history.connect(db)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 2
        assert not c.execute("SELECT 1 FROM sqlite_master WHERE name = 'half_done'").fetchone()


def test_a_database_from_a_newer_energybench_is_refused(tmp_path, cwd, capsys):
    db = tmp_path / "h.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        c.execute("INSERT INTO schema_version VALUES (99, 'later')")
    assert main(["history", "add", str(_run_dir(tmp_path / "run")), "--db", str(db)]) == 2
    assert "newer than this energybench" in capsys.readouterr().err
