"""Shared test helpers: tiny suites written to tmp_path, the CLI run in-process or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_TRAINING = """
training:
  learning_rate: 3.0e-3
  batch_size: 16
  max_steps: 4
  eval_every_steps: 2
  patience: 2
  max_source_length: 48
  max_eval_examples: 12
  eval_batch_size: 32
measure:
  latency_warmup: 1
  latency_repeats: 3
"""


def write_suite(tmp_path: Path, body: str, name: str = "suite.yaml", training: str = TINY_TRAINING) -> Path:
    path = tmp_path / name
    text = textwrap.dedent(body).strip() + "\n"
    if "training:" not in text:
        text += textwrap.dedent(training)
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}
    return subprocess.run([sys.executable, "-m", "energybench.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from more threads; on a busy 2-core machine OpenMP spin-waits made steps ~10× slower.

    Only where torch is already loaded (collection imported it): a test file that never touches torch does not
    pay its ~6 s import (what made each mutant of benchmarks/mutation_score.py slow).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def suite_file(tmp_path):
    def make(body: str, **kw) -> Path:
        return write_suite(tmp_path, body, **kw)

    return make
