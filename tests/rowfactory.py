"""Synthetic result rows for the report, compare and history tests (shaped like energybench.results.RunResult)."""

from __future__ import annotations

from pathlib import Path

from energybench.results import append_result

NO_GPU = "no CUDA device: torch.cuda.is_available() is False"


def figures(**fields) -> dict:
    """A window/accounting dict: ``name=value`` (measured), ``name=None`` (null, reason NO_GPU),
    ``name=(value, provenance, reason)``."""
    out: dict = {"provenance": {}, "reasons": {}}
    for k, v in fields.items():
        if isinstance(v, tuple):
            value, prov, reason = v
        elif v is None:
            value, prov, reason = None, "unavailable", NO_GPU
        else:
            value, prov, reason = v, "measured", None
        out[k] = value
        out["provenance"][k] = prov
        if reason:
            out["reasons"][k] = reason
    return out


def make_row(method: str = "lora", task: str = "a", seed: int = 0, *, backbone: str = "tiny-t5",
             score: float | None = 50.0, status: str = "ok", error: str | None = None, train: dict | None = None,
             inference: dict | None = None, accounting: dict | None = None, method_info: dict | None = None,
             trainable: int = 10, total: int = 100, lr: float = 1e-3, finished_at: str = "2026-01-01T00:00:00+00:00",
             environment: dict | None = None) -> dict:
    """One row; the run_id is derived from the configuration, as the runner's hash is."""
    config = {"backbone": {"name": backbone, "path": None}, "task": {"name": task, "data_dir": None},
              "method": {"name": method, "label": method, "settings": {}}, "seed": seed,
              "training": {"learning_rate": lr}}
    return {"run_id": f"{backbone}-{task}-{method}-{seed}-{lr:g}", "suite": "synthetic", "backbone": backbone,
            "task": task, "method": method, "method_name": method, "seed": seed, "config": config, "status": status,
            "error": error, "score": score if status == "ok" else None, "trainable_params": trainable,
            "total_params": total, "finished_at": finished_at,
            "windows": {"train": figures(**{"wall_s": 10.0, **(train or {})}),
                        "eval": figures(wall_s=1.0),
                        "inference": figures(**{"wall_s": 0.5, **(inference or {})})},
            "accounting": figures(**(accounting or {})),
            "method_info": method_info or {},
            "environment": environment or {"energybench": "0.1.0", "torch": "2.13.0+cpu", "device": "cpu"}}


def write_rows(directory: Path, rows: list[dict]) -> Path:
    for r in rows:
        append_result(directory / "results.jsonl", r)
    return directory
