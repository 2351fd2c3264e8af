"""Tasks: where examples come from, how they are split and formatted, how they are scored.

A task resolves to a :class:`~energybench.tasks.base.TaskData`: train, validation
and test examples already split by READ's protocol, plus the task's spec (its
label words and metric). Every task is evaluated the same way, by rank
classification, so methods are compared on equal terms.
"""

from energybench.tasks.base import Example, TaskData, TaskSpec
from energybench.tasks.loading import check_task_available, load_task

__all__ = ["Example", "TaskData", "TaskSpec", "load_task", "check_task_available"]
