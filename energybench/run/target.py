"""Cost to target, MLPerf-style: what a run spent up to its first validation at or above a quality target.

A run's ``curve`` (:mod:`energybench.run.curve`) lists its validations with
the cumulative steps, examples, wall time and energy at each. ``to_target`` is
the first point whose validation score is at or above the target — or null,
with "not reached (best 88.4 at step 1200)". The target is the suite's
``target:`` block resolved for the run: an absolute score for its task, or a
fraction of the reference method's best validation score on the same
backbone, task and seed (the seed-matched run). Relative targets therefore
need the reference run first: :func:`phases` orders the grid so the reference
method's runs finish before the others start, and :func:`annotate` reads the
reference's row when the dependent run's row is appended.
"""

from __future__ import annotations

from typing import Any, Iterable

from energybench.run.blocks import TargetSettings, reference_label
from energybench.run.plan import RunSpec


def _fmt(score: float) -> str:
    return f"{round(float(score), 2):g}"


def scan_to_target(points: list[dict[str, Any]], target: float) -> tuple[dict[str, Any] | None, str | None]:
    """The first point with ``val_score >= target``; else None and why (with the best score and its step)."""
    best = None
    for p in points:
        score = p.get("val_score")
        if score is None:
            continue
        if score >= target:
            return dict(p), None
        if best is None or score > best["val_score"]:
            best = p
    if best is None:
        return None, "not reached (no validation score recorded)"
    return None, f"not reached (best {_fmt(best['val_score'])} at step {best['step']})"


def reference_method(settings: TargetSettings, specs: Iterable[RunSpec]) -> str | None:
    """The display label of a relative target's reference method (None for absolute targets)."""
    if not settings.relative:
        return None
    pairs = list(dict.fromkeys((s.method.display, s.method.name) for s in specs))
    return reference_label(settings.relative_to, pairs)


def phases(settings: TargetSettings | None, specs: list[RunSpec]) -> list[list[RunSpec]]:
    """The grid in dependency order: the reference method's runs first when targets are relative."""
    ref = reference_method(settings, specs) if settings is not None else None
    if ref is None:
        return [specs]
    first = [s for s in specs if s.method.display == ref]
    return [part for part in (first, [s for s in specs if s.method.display != ref]) if part]


def resolve_target(settings: TargetSettings, row: dict, rows: Iterable[dict],
                   reference: str | None) -> tuple[dict | None, str | None]:
    """The run's target (score and where it came from), or None and why there is none."""
    if not settings.relative:
        score = (settings.scores or {}).get(row["task"])
        if score is None:
            return None, f"the suite's target block gives no score for task {row['task']}"
        return {"score": float(score), "kind": "absolute"}, None
    matches = [r for r in rows if r.get("method") == reference and r.get("backbone") == row["backbone"]
               and r.get("task") == row["task"] and r.get("seed") == row["seed"]
               and r.get("role", "final") == "final"]
    ref = matches[-1] if matches else None
    what = f"{reference} (seed {row['seed']}, {row['task']})"
    if ref is None:
        return None, f"no reference run of {what} in this output directory"
    if ref.get("status") != "ok":
        return None, f"the reference run of {what} failed: {ref.get('error')}"
    best = ref.get("val_score")
    if best is None:
        return None, f"the reference run of {what} has no validation score"
    return {"score": settings.fraction * float(best), "kind": "relative", "relative_to": reference,
            "fraction": settings.fraction, "reference_val_score": float(best), "reference_run_id": ref["run_id"]}, None


def annotate(row: dict, settings: TargetSettings | None, rows: Iterable[dict], reference: str | None) -> dict:
    """Fill ``target``, ``to_target`` and ``to_target_reason`` of a finished final run's row (in place)."""
    if settings is None or row.get("role", "final") != "final":
        return row
    if row.get("status") != "ok":
        row["to_target_reason"] = "the run failed"
        return row
    target, why = resolve_target(settings, row, rows, reference)
    row["target"] = target
    if target is None:
        row["to_target"], row["to_target_reason"] = None, why
        return row
    row["to_target"], row["to_target_reason"] = scan_to_target(row.get("curve") or [], target["score"])
    return row
