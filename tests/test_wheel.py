"""The built wheel carries what a non-editable install needs: the suites, the method plugins (and their entry
points), the integrations. Built offline from a copy of the source tree (no build isolation)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".venv", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", "reports")


def test_the_built_wheel_contains_the_suites_methods_and_integrations(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check",
                           "--outdir", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("energybench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    suites = {p.name for p in (ROOT / "suites").glob("*.yaml")}
    methods = {p.name for p in (ROOT / "methods").glob("*.py")}
    assert suites and {f"energybench/suites/{s}" for s in suites} <= names
    assert methods and {f"energybench/methods/{m}" for m in methods} <= names
    assert {"energybench/tracking.py", "energybench/integrations/transformers.py", "energybench/cli.py"} <= names
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for name in ("full_ft", "bitfit", "lora", "adalora", "dora", "dydora", "adapter", "read", "lst"):
        assert f"{name} = energybench.methods." in entry
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: torch<3,>=2.13" in meta  # a compatible range, not an exact pin
