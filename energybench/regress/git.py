"""The git commit (and whether the tree is dirty) that produced a result; shared by baselines and the history."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(args: list[str], cwd: str | Path | None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit checked out in ``cwd`` (default: the current directory), or None outside a git work tree."""
    return _git(["rev-parse", "HEAD"], cwd) or None


def git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Whether tracked files differ from that commit (None when not in a git work tree)."""
    out = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return None if out is None else bool(out)


# --------------------------------------------------------------------------- schema
