"""Checks a suite can run before any run starts: models, data, method schedules.

Offline, a suite that names a hub model or data set fails here within
seconds, naming what is missing and how to point at a local copy, instead of
after the first runs have spent their time.
"""

from __future__ import annotations

from energybench.models.backbones import backbone_family, check_backbone_available
from energybench.registry import load_method
from energybench.run.plan import resolved_training
from energybench.suite import Suite, method_settings, suite_line
from energybench.tasks import check_task_available, load_task
from energybench.tasks.glue import TaskDataError
from energybench.train.loop import planned_steps


class PreflightError(RuntimeError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def preflight(suite: Suite, file: str = "suite") -> None:
    problems = []

    def where(*loc) -> str:
        line = suite_line(suite, *loc)
        return f"{file}:{line}" if line else file

    for i, b in enumerate(suite.backbones):
        reason = check_backbone_available(b.name, b.path)
        if reason:
            problems.append(f"{where('backbones', i, 'path' if b.path else 'name')} backbones[{i}] ({b.name}): {reason}")
        else:
            problems += _method_families(suite, i, file)
    train_sizes: dict[str, int] = {}
    for i, t in enumerate(suite.tasks):
        reason = check_task_available(t.name, t.data_dir)
        at = where("tasks", i, "data_dir" if t.data_dir else "name")
        if reason:
            problems.append(f"{at} tasks[{i}] ({t.name}): {reason}")
            continue
        try:
            train_sizes[t.name] = len(load_task(t.name, t.data_dir,
                                                max_train_examples=suite.training.max_train_examples).train)
        except TaskDataError as exc:  # a malformed TSV: its file:line, under the suite entry that named it
            problems.append(f"{at} tasks[{i}] ({t.name}): {exc}")
    problems += _label_truncation(suite, file)
    for i, m in enumerate(suite.methods):
        check = getattr(load_method(m.name), "check_schedule", None)
        if check is None:
            continue
        settings = method_settings(m)
        cfg = resolved_training(suite, m)
        for task, n in train_sizes.items():
            reason = check(settings, planned_steps(n, cfg))
            if reason:
                problems.append(f"{where('methods', i)} methods[{i}] ({m.display}) on {task}: {reason}")
    if problems:
        raise PreflightError(problems)


def _method_families(suite: Suite, i: int, file: str) -> list[str]:
    """Methods not defined on backbone i's model family (read from its config: hub names too)."""
    b = suite.backbones[i]
    family = backbone_family(b.name, b.path)
    if family is None:
        return []
    out = []
    for j, m in enumerate(suite.methods):
        reason = load_method(m.name).unsupported_reason(family)
        if reason:
            out.append(f"{file} methods[{j}] ({m.display}) with backbones[{i}] ({b.display}): {reason}")
    return out


def _label_truncation(suite: Suite, file: str) -> list[str]:
    """A label longer than max_target_length would be scored truncated: refuse it up front.

    Checked for the byte-level tiny presets, where a label takes one token per
    byte plus EOS; subword tokenizers (t5-base) need far fewer tokens.
    """
    from energybench.models.backbones import TINY_PRESETS
    from energybench.tasks.formatting import candidates
    from energybench.tasks.loading import task_spec

    if not any(b.name in TINY_PRESETS and b.path is None for b in suite.backbones):
        return []
    limit = suite.training.max_target_length
    out = []
    for t in suite.tasks:
        longest = max(candidates(task_spec(t.name)), key=len)
        n = len(longest.encode()) + 1
        if n > limit:
            out.append(f"{file} training.max_target_length: {limit} tokens truncate task {t.name}'s label "
                       f"{longest!r} ({n} byte tokens with EOS); set it to at least {n}")
    return out
