"""What a step knows about one task family: its catalog entry, the prompt files it generates
with, and whether the benchmark index holds its own evaluation split."""

from __future__ import annotations

from pathlib import Path

from mind_assets.decontamination.benchmarks import scored_splits
from mind_assets.decontamination.check import Decontamination
from mind_assets.lib.storage import asset_path, output_exists, read_output
from mind_assets.settings import MindSettings
from mind_assets.task_qa.catalog import CatalogEntry
from mind_assets.task_qa.seeds import eval_splits
from mind_assets.task_qa.stage import TaskQAPrompts


def catalog_path(settings: MindSettings) -> Path:
    """The output of `task_seed_catalog` (one file, not partitioned)."""
    return asset_path(settings.data_dir, "task_seed_catalog")


def selected_families(
    entries: list[CatalogEntry], wanted: list[str]
) -> tuple[list[str], list[str]]:
    """(families to use, configured names that are unknown or ineligible)."""
    eligible = {e.task for e in entries if e.eligible}
    if wanted == ["all"]:
        return sorted(eligible), []
    return [w for w in wanted if w in eligible], [w for w in wanted if w not in eligible]


def read_catalog(settings: MindSettings) -> list[CatalogEntry]:
    path = catalog_path(settings)
    if not output_exists(path):
        raise FileNotFoundError(f"{path} is missing: materialize task_seed_catalog first")
    return [CatalogEntry(**row) for row in read_output(path).to_pylist()]


def catalog_output_types(settings: MindSettings) -> dict[str, str | None]:
    """Family -> its output type, for the families the catalog holds (none before it exists)."""
    path = catalog_path(settings)
    if not output_exists(path):
        return {}
    output_types: dict[str, str | None] = {}
    for row in read_output(path, columns=["family", "output_type"]).to_pylist():
        output_types.setdefault(row["family"], row["output_type"])
    return output_types


def read_catalog_entry(settings: MindSettings, family: str) -> CatalogEntry:
    for entry in read_catalog(settings):
        if entry.family == family:
            return entry
    raise KeyError(f"task family {family!r} is not in the catalog {catalog_path(settings)}")


def require_own_benchmark(entry: CatalogEntry, decontamination: Decontamination) -> None:
    """Task Q&A must be checked against its own task's evaluation split: refuse a family whose
    scored split the benchmark index does not hold (unless decontamination is off)."""
    if not decontamination.on:
        return
    held = {s for splits in decontamination.version.splits.values() for s in splits}
    for split in eval_splits(entry):
        dataset = split.dataset_path + (f"/{split.dataset_name}" if split.dataset_name else "")
        if split.split in scored_splits(entry.__dict__) and f"{dataset} {split.split}" not in held:
            raise ValueError(
                f"task family {entry.family!r}: its evaluation split {dataset} {split.split!r} "
                "is not in the benchmark index; add the task to MIND_DECONTAMINATION__BENCHMARKS "
                "(and materialize benchmark_index) so its items are checked against it"
            )


def native_form(entry: CatalogEntry) -> str:
    """The form of a family's own items: multiple choice, or open-ended for generative tasks."""
    return "multiple_choice" if entry.output_type == "multiple_choice" else "open_ended"


def task_qa_prompts_for(settings: MindSettings, output_type: str | None) -> TaskQAPrompts:
    """The prompt files a family generates with, chosen by its output type and by
    MIND_TASK_QA__STRUCTURED_OUTPUT (the JSON set or the free-text one)."""
    return TaskQAPrompts.load(
        settings.prompts_dir,
        output_type=output_type or "",
        structured=settings.task_qa.structured_output,
    )
