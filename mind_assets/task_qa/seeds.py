"""Seed loading and normalisation for task-seeded Q&A.

Only a task's training split can be loaded as seeds; the guard lives in `load_seed_split`, the
one function that reads seed data, so no caller can get around it. Rows are rendered through
lm-eval's own task object (its `process_docs`, `doc_to_text`, `doc_to_choice`, `doc_to_target`
and `!function` hooks), then normalised to one schema whose answer is always the answer's text.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from mind_assets.lib.datasets import load_dataset_split
from mind_assets.settings import EvalSplit
from mind_assets.task_qa.catalog import CatalogEntry
from mind_assets.task_qa.schema import SEED_SCHEMA

_EVAL_SPLIT_NAME = re.compile(r"(?i)test|valid|dev|eval")
_LETTERS = {"A", "B", "C", "D", "E", "F", "G", "H"}


class EvalSplitRefused(ValueError):
    """Someone asked to load an evaluation split as generation seeds."""


def check_seed_split(entry: CatalogEntry, split: str) -> None:
    """Raise EvalSplitRefused unless `split` is the task's own, distinct training split."""
    if split in {entry.test_split, entry.validation_split} or _EVAL_SPLIT_NAME.search(split):
        raise EvalSplitRefused(
            f"{entry.task}: refusing to load split {split!r} as seeds: it is an evaluation split "
            f"(test={entry.test_split!r}, validation={entry.validation_split!r})"
        )
    if not entry.eligible or split != entry.training_split:
        why = entry.reason or f"asked for {split!r}"
        raise EvalSplitRefused(
            f"{entry.task}: only its training split may seed generation "
            f"(training_split={entry.training_split!r}; {why})"
        )


def _load_split(entry: CatalogEntry, split: str, mirror_dir: Path | None) -> Any:
    return load_dataset_split(
        entry.dataset_path, entry.dataset_name, split, mirror_dir, label=entry.task
    )


def load_seed_split(entry: CatalogEntry, split: str, mirror_dir: Path | None) -> Any:
    """The task's training split as a `datasets.Dataset`, from the mirror or the hub."""
    check_seed_split(entry, split)
    return _load_split(entry, split, mirror_dir)


def eval_splits(entry: CatalogEntry) -> list[EvalSplit]:
    """The task's own evaluation splits (test, validation), never its training split."""
    names = sorted({entry.test_split, entry.validation_split} - {None, entry.training_split})
    if not entry.dataset_path:
        return []
    return [
        EvalSplit(dataset_path=entry.dataset_path, dataset_name=entry.dataset_name, split=n)
        for n in names
    ]


def build_task(entry: CatalogEntry, train: Any) -> Any:
    """lm-eval's own task object over our training split only (nothing else is downloaded)."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(entry.yaml_path, resolve_func=True)
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)

    class SeedTask(ConfigurableTask):
        def download(self, dataset_kwargs: Any = None, **kwargs: Any) -> None:
            self.dataset = {entry.training_split: train}

        def fewshot_docs(self) -> None:
            return None

        @property
        def eval_docs(self) -> Any:
            # lm-eval sanity-checks its first "eval" doc at construction; give it training data
            # so no evaluation split is ever touched.
            return self.training_docs()

    return SeedTask(config=cfg)


def normalize_seed(
    task: Any, entry: CatalogEntry, doc: dict[str, Any], index: int
) -> dict[str, Any]:
    """One training doc in SEED_SCHEMA, through the task's own rendering functions."""
    text = task.doc_to_text(doc)
    target = task.doc_to_target(doc)
    multiple_choice = entry.output_type == "multiple_choice"
    choices: list[str] | None = None
    context = None
    if multiple_choice:
        choices = [str(c) for c in task.doc_to_choice(doc)]
        if isinstance(text, int):
            # Inverted tasks (winogrande): the choices are contexts, doc_to_text picks the right
            # one and the target is the shared continuation.
            question = f"Which option completes the sentence? ... {target}"
            answer = choices[text]
            if "sentence" in doc and "option1" in doc:
                question, choices = doc["sentence"], [doc["option1"], doc["option2"]]
                answer = choices[text]
        else:
            question = str(text)
            if set(choices) <= _LETTERS:
                choices = _option_texts(doc, choices)
            index_of_answer = target if isinstance(target, int) else _index_of(target, choices)
            answer = choices[index_of_answer]
    else:
        question = str(text)
        answer = str(target[0] if isinstance(target, list) else target)
    rationale = None
    if entry.task.startswith("gsm8k") and "####" in answer:
        rationale, answer = (part.strip() for part in answer.rsplit("####", 1))
        rationale = re.sub(r"<<[^>]*>>", "", rationale)
    question = re.sub(r"\s*(Answer|A):\s*$", "", question.strip())
    if question.startswith("Question:"):
        question = question[len("Question:") :].strip()
    digest = hashlib.sha256(f"{entry.task}:{index}:{question}".encode()).hexdigest()[:16]
    return {
        "task": entry.task,
        "family": entry.family,
        "seed_id": f"{entry.task}:{index}:{digest}",
        "context": context,
        "question": question,
        "choices": choices,
        "answer": str(answer).strip(),
        "rationale": rationale,
        "output_type": "multiple_choice" if multiple_choice else "generation",
        "source_split": entry.training_split,
    }


def _index_of(target: Any, choices: list[str]) -> int:
    if isinstance(target, str) and target.strip().isdigit():
        return int(target)
    if target in choices:
        return choices.index(target)
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    if isinstance(target, str) and target.strip() in letters:
        return letters.index(target.strip())
    raise ValueError(f"cannot map target {target!r} onto {len(choices)} choices")


def _option_texts(doc: dict[str, Any], letters: list[str]) -> list[str]:
    """Where doc_to_choice yields only letters (commonsense_qa), the option texts come from the
    raw doc's `choices: {label, text}`."""
    options = doc.get("choices")
    if isinstance(options, dict) and "text" in options and "label" in options:
        by_label = dict(zip(options["label"], options["text"], strict=True))
        return [by_label[letter] for letter in letters if letter in by_label]
    raise ValueError(f"choices are only letters {letters} and the doc has no option texts")


def normalize_split(entry: CatalogEntry, train: Any, limit: int | None = None) -> pa.Table:
    task = build_task(entry, train)
    docs = task.training_docs()
    rows = []
    for index, doc in enumerate(docs):
        if limit is not None and index >= limit:
            break
        rows.append(normalize_seed(task, entry, doc, index))
    return pa.Table.from_pylist(rows, schema=SEED_SCHEMA)
