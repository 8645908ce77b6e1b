"""Which lm-evaluation-harness tasks may seed generation, read offline from lm-eval's task index.

A task is eligible only if it declares a training split that is neither its test split nor its
validation split: about 130 tasks name "train" as their evaluation split, and generating from
those would train on the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class CatalogEntry:
    task: str
    family: str
    eligible: bool
    reason: str  # why it was refused; empty when eligible
    output_type: str | None
    dataset_path: str | None
    dataset_name: str | None
    training_split: str | None
    validation_split: str | None
    test_split: str | None
    yaml_path: str | None


def eligibility(cfg: dict[str, Any]) -> tuple[bool, str]:
    """(eligible, reason refused) for one task config."""
    training = cfg.get("training_split")
    if not training:
        return False, "declares no training_split"
    if training == cfg.get("test_split"):
        return False, f"training_split {training!r} is also its test_split"
    if training == cfg.get("validation_split"):
        return False, f"training_split {training!r} is also its validation_split"
    return True, ""


@lru_cache(maxsize=1)
def _task_manager() -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager()


def build_catalog() -> list[CatalogEntry]:
    """Every lm-eval subtask with its eligibility, without downloading any dataset."""
    manager = _task_manager()
    entries = []
    for task in sorted(manager.all_subtasks):
        item = manager.task_index[task]
        cfg = dict(item.cfg or {})
        eligible, reason = eligibility(cfg)
        entries.append(
            CatalogEntry(
                task=task,
                family=task,  # each task is its own family; MIND_TASK_QA__FAMILIES names tasks
                eligible=eligible,
                reason=reason,
                output_type=cfg.get("output_type"),
                dataset_path=cfg.get("dataset_path"),
                dataset_name=cfg.get("dataset_name"),
                training_split=cfg.get("training_split"),
                validation_split=cfg.get("validation_split"),
                test_split=cfg.get("test_split"),
                yaml_path=str(item.yaml_path) if item.yaml_path else None,
            )
        )
    return entries
