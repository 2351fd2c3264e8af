"""Keep the current working directory off a run process's ``sys.path``.

A run started from a folder that holds ``peft/__init__.py`` (or ``torch/``,
``transformers/``...) must not import it: Python puts the script's folder —
for ``-m`` and ``-c``, the current directory — first on ``sys.path``, and
multiprocessing hands the parent's path (with ``''`` turned into the current
directory) to its fork server. Fresh interpreters run with ``-P`` (Python
3.11+, "safe path"; on 3.10 a ``-c`` stub drops the entry), and the fork
server imports this module first of its preloads, so that neither the preload
(torch, peft, ...) nor any run forked from it looks in the current directory.

Importing this module has that one effect, on purpose.
"""

from __future__ import annotations

import os
import sys


def drop_cwd_from_path() -> list[str]:
    """Remove ``''``, ``'.'`` and the current directory from ``sys.path``; return what was removed."""
    cwd = os.path.realpath(os.getcwd())
    removed = [p for p in sys.path if p in ("", ".") or os.path.realpath(p) == cwd]
    sys.path[:] = [p for p in sys.path if p not in removed]
    return removed


def child_command(module: str) -> tuple[str, ...]:
    """``python -m MODULE`` without the current directory on ``sys.path``."""
    if sys.version_info >= (3, 11):
        return (sys.executable, "-P", "-m", module)
    stub = ("import sys, runpy; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
            f"sys.argv[0] = {module!r}; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    return (sys.executable, "-c", stub)


drop_cwd_from_path()
