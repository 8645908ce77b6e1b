"""lm-evaluation-harness's task index, read once per process (building it reads every task's
YAML, tens of seconds): the task catalog and the benchmark index both resolve task names here."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def task_manager() -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager()
