"""The benchmarks rows are checked against: names resolved to evaluation splits, and those splits
read, through the same loader and local mirror as task seeds, into one table of texts.

A name is an lm-evaluation-harness task or group (a group stands for each of its tasks): a task's
test split is read, and its validation split where it has no test split (lm-eval then scores on
validation). A benchmark lm-eval does not know is given as a `BenchmarkSpec` (dataset and splits).
Every string in a benchmark row is one text of its item (question, solution, each option), so a
page that quotes only the question, or only the worked solution, is still found. A split that
cannot be read, or holds no rows, is an error naming the benchmark: nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from mind_assets.lib.datasets import DatasetSplitError, load_dataset_split
from mind_assets.settings import BenchmarkSpec

BENCHMARK_TEXT_SCHEMA = pa.schema(
    [
        pa.field("benchmark", pa.string(), nullable=False),  # the configured name
        pa.field("task", pa.string(), nullable=False),  # the lm-eval task (or the name)
        pa.field("dataset", pa.string(), nullable=False),  # path[/name]
        pa.field("split", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),  # <task>:<split>:<row>
        pa.field("field", pa.string(), nullable=False),  # e.g. question, choices.text.2
        pa.field("text", pa.string(), nullable=False),
    ]
)


class BenchmarkError(ValueError):
    """A benchmark that cannot be resolved or read; the message names it."""


@dataclass(frozen=True)
class BenchmarkSplit:
    """One evaluation split of one benchmark."""

    benchmark: str
    task: str
    dataset_path: str
    dataset_name: str | None
    split: str

    @property
    def dataset(self) -> str:
        return self.dataset_path + (f"/{self.dataset_name}" if self.dataset_name else "")

    @property
    def label(self) -> str:
        return f"benchmark {self.benchmark!r} ({self.task}: {self.dataset} {self.split!r})"


# A task's name -> its lm-eval config (a group's: its `task` list); None for an unknown name.
TaskLookup = Callable[[str], "dict[str, Any] | None"]


def lm_eval_lookup() -> TaskLookup:
    from mind_assets.lib.lm_eval_tasks import task_manager

    index = task_manager().task_index

    def lookup(name: str) -> dict[str, Any] | None:
        entry = index.get(name)
        return None if entry is None else dict(entry.cfg or {})

    return lookup


def scored_splits(cfg: dict[str, Any]) -> list[str]:
    """The split lm-eval scores a task on: its test split, else its validation split."""
    if cfg.get("test_split"):
        return [cfg["test_split"]]
    return [cfg["validation_split"]] if cfg.get("validation_split") else []


def _tasks(name: str, lookup: TaskLookup, seen: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(task, config) for a task, or for every task of a group, depth first."""
    if name in seen:
        return
    seen.add(name)
    cfg = lookup(name)
    if cfg is None:
        raise BenchmarkError(f"benchmark {name!r}: lm-eval knows no task or group of that name")
    members = cfg.get("task")
    if cfg.get("dataset_path") or not isinstance(members, list):
        yield name, cfg
        return
    for member in members:
        if isinstance(member, dict):
            if member.get("dataset_path"):
                yield str(member.get("task")), member
                continue
            member = member.get("task") or member.get("group")
        yield from _tasks(str(member), lookup, seen)


def resolve_benchmarks(
    benchmarks: Sequence[str | BenchmarkSpec], lookup: TaskLookup | None = None
) -> list[BenchmarkSplit]:
    """Every evaluation split of the configured benchmarks, in the order given."""
    splits: list[BenchmarkSplit] = []
    for entry in benchmarks:
        if isinstance(entry, BenchmarkSpec):
            splits += [
                BenchmarkSplit(entry.name, entry.name, entry.dataset_path, entry.dataset_name, s)
                for s in entry.splits
            ]
            continue
        lookup = lookup or lm_eval_lookup()
        found = []
        for task, cfg in _tasks(entry, lookup, set()):
            if not cfg.get("dataset_path"):
                raise BenchmarkError(f"benchmark {entry!r}: task {task!r} names no dataset")
            found += [
                BenchmarkSplit(entry, task, cfg["dataset_path"], cfg.get("dataset_name"), s)
                for s in scored_splits(cfg)
            ]
        if not found:
            raise BenchmarkError(f"benchmark {entry!r}: no task of it declares a test split")
        splits += found
    return list(dict.fromkeys(splits))


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(field path, text) of every non-empty string in a row, nested fields included."""
    if isinstance(value, str):
        if value.strip():
            yield path, value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _strings(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            yield from _strings(inner, f"{path}.{i}")


def read_benchmark_texts(splits: Sequence[BenchmarkSplit], mirror_dir: Path | None) -> pa.Table:
    """Every text of every item of `splits` (BENCHMARK_TEXT_SCHEMA)."""
    rows: list[dict[str, str]] = []
    for split in splits:
        try:
            dataset = load_dataset_split(
                split.dataset_path, split.dataset_name, split.split, mirror_dir, label=split.label
            )
        except DatasetSplitError as error:
            raise BenchmarkError(f"{split.label} cannot be loaded: {error}") from error
        before = len(rows)
        for index, doc in enumerate(dataset):
            item_id = f"{split.task}:{split.split}:{index}"
            for field_path, text in _strings(doc, ""):
                rows.append(
                    {
                        "benchmark": split.benchmark,
                        "task": split.task,
                        "dataset": split.dataset,
                        "split": split.split,
                        "item_id": item_id,
                        "field": field_path,
                        "text": text,
                    }
                )
        if len(rows) == before:
            raise BenchmarkError(f"{split.label} holds no rows with text")
    return pa.Table.from_pylist(rows, schema=BENCHMARK_TEXT_SCHEMA)
