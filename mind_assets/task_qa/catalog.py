"""Which lm-evaluation-harness tasks may seed generation, read offline from lm-eval's task index.

A task is eligible only if it declares a training split that is neither its test split nor its
validation split: about 130 tasks name "train" as their evaluation split, and generating from
those would train on the benchmark.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mind_assets.lib.lm_eval_tasks import task_manager
from mind_assets.task_qa.licences import LicenceFinder


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
    # How a generated item's answer is checked: `choice` (multiple choice), `math` (math-verify),
    # `exact_match` (the task's own exact-match metric) or `free_text` (no answer check).
    answer_check: str = ""
    metric_options: str = "{}"  # JSON: the metric's normalisation and the task's stop sequences
    licence: str = ""  # Hub licence id of the task's dataset, "unknown" when nobody recorded one
    licence_source: str = ""  # where the licence was read: a dataset card's path, or the table


# Generative tasks whose answers are math (math-verify checks them), by name, dataset or tag.
_MATH_TASK = re.compile(r"(?i)gsm|math|arith|asdiv|svamp|mawps|minerva|aime|\bamc")
# lm-eval metrics that score a short generated answer against the reference by matching it.
_MATCH_METRICS = {"exact_match", "em", "f1", "acc", "quasi_exact_match"}
# lm-eval's coqa and drop score `em` after SQuAD-style normalisation: case, punctuation and
# articles ignored (lm_eval/tasks/coqa/utils.py, drop/utils.py).
_SQUAD_NORMALISATION = {
    "ignore_case": True,
    "ignore_punctuation": True,
    "regexes_to_ignore": [r"\b(?:a|an|the)\b"],
}
_EXACT_MATCH_OPTIONS = ("ignore_case", "ignore_punctuation", "ignore_numbers", "regexes_to_ignore")


def answer_check(task: str, cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(how generated items of this task have their answer checked, the metric's options)."""
    output_type = cfg.get("output_type")
    if output_type == "multiple_choice":
        return "choice", {}
    if output_type != "generate_until":
        return "free_text", {}
    tags = cfg.get("tag") or []
    tags = [tags] if isinstance(tags, str) else tags
    names = [task, str(cfg.get("dataset_path") or ""), *map(str, tags)]
    if any(_MATH_TASK.search(name) for name in names):
        return "math", {}
    until = (cfg.get("generation_kwargs") or {}).get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    metrics = [m for m in cfg.get("metric_list") or [] if isinstance(m, dict)]
    if not metrics:  # lm-eval scores generate_until tasks by exact match unless told otherwise
        return "exact_match", {"until": until}
    for metric in metrics:
        name = str(metric.get("metric"))
        if name == "exact_match":
            options = {k: metric[k] for k in _EXACT_MATCH_OPTIONS if k in metric}
            return "exact_match", {**options, "until": until}
        if name in _MATCH_METRICS:
            return "exact_match", {**_SQUAD_NORMALISATION, "until": until}
    return "free_text", {}


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


def build_catalog(mirror_dir: Path | None = None) -> list[CatalogEntry]:
    """Every lm-eval subtask with its eligibility, answer check and licence, without
    downloading any dataset (licences come from dataset cards already on disk, else a table)."""
    manager = task_manager()
    licences = LicenceFinder(mirror_dir)
    entries = []
    for task in sorted(manager.all_subtasks):
        item = manager.task_index[task]
        cfg = dict(item.cfg or {})
        eligible, reason = eligibility(cfg)
        check, options = answer_check(task, cfg)
        licence = licences.find(cfg.get("dataset_path"))
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
                answer_check=check,
                metric_options=json.dumps(options),
                licence=licence.licence,
                licence_source=licence.source,
            )
        )
    return entries
