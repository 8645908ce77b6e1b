"""Task-seeded Q&A assets: the seed catalog, normalised seeds per family, generated Q&A."""

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from mind_assets.lib.metadata import file_data_version, markdown_table, parquet_metadata
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.storage import asset_path, validate_name, write_parquet_atomic
from mind_assets.llm.resource import LLMResource
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import MindSettings, get_settings
from mind_assets.task_qa.catalog import CatalogEntry, build_catalog
from mind_assets.task_qa.seeds import load_eval_texts, load_seed_split, normalize_split
from mind_assets.task_qa.stage import TaskQAPrompts, run_task_qa

TASK_FAMILIES_PARTITION = "task_families"
task_families_partitions = DynamicPartitionsDefinition(name=TASK_FAMILIES_PARTITION)


def catalog_path(settings: MindSettings) -> Path:
    return asset_path(settings.data_dir, "task_seed_catalog")


def selected_families(
    entries: list[CatalogEntry], wanted: list[str]
) -> tuple[list[str], list[str]]:
    """(families to use, configured names that are unknown or ineligible)."""
    eligible = {e.task for e in entries if e.eligible}
    if wanted == ["all"]:
        return sorted(eligible), []
    return [w for w in wanted if w in eligible], [w for w in wanted if w not in eligible]


def read_catalog_entry(settings: MindSettings, family: str) -> CatalogEntry:
    path = catalog_path(settings)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: materialize task_seed_catalog first")
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        if row["family"] == family:
            return CatalogEntry(**row)
    raise KeyError(f"task family {family!r} is not in the catalog {path}")


@asset(
    group_name="task_qa",
    kinds={"parquet"},
    code_version="1",
    description="Every lm-evaluation-harness task with its seed eligibility (a training split "
    "distinct from its test and validation splits) and the reason each refused task was refused. "
    "Registers the configured families as `task_families` partitions.",
)
def task_seed_catalog(context: AssetExecutionContext) -> MaterializeResult:
    settings = get_settings()
    entries = build_catalog()
    table = pa.Table.from_pylist([e.__dict__ for e in entries])
    path = write_parquet_atomic(table, catalog_path(settings))
    families, unusable = selected_families(entries, settings.task_families)
    if unusable:
        context.log.warning("configured task families that are unknown or ineligible: %s", unusable)
    new = [
        f
        for f in families
        if not context.instance.has_dynamic_partition(TASK_FAMILIES_PARTITION, f)
    ]
    context.instance.add_dynamic_partitions(
        TASK_FAMILIES_PARTITION, [validate_name(f) for f in new]
    )
    refused = Counter(e.reason.split(" '")[0] for e in entries if not e.eligible)
    return MaterializeResult(
        metadata={
            **parquet_metadata(table, path, ["task", "eligible", "reason", "output_type"]),
            "eligible": sum(e.eligible for e in entries),
            "refused": sum(not e.eligible for e in entries),
            "refused_by_reason": MetadataValue.json(dict(refused)),
            "selected_families": families,
            "unusable_families": unusable,
        },
        data_version=file_data_version(path),
    )


@asset(
    partitions_def=task_families_partitions,
    deps=[task_seed_catalog],
    group_name="task_qa",
    kinds={"parquet"},
    code_version="1",
    description="A task's training split, rendered through lm-eval's own task object and "
    "normalised: question, choices, answer as text (never a letter), rationale.",
)
def task_seeds(context: AssetExecutionContext) -> MaterializeResult:
    settings = get_settings()
    family = context.partition_key
    entry = read_catalog_entry(settings, family)
    train = load_seed_split(entry, entry.training_split, settings.task_mirror)
    table = normalize_split(entry, train, limit=settings.task_seed_limit)
    path = write_parquet_atomic(table, asset_path(settings.data_dir, "task_seeds", family))
    return MaterializeResult(
        metadata={
            **parquet_metadata(table, path, ["question", "choices", "answer"]),
            "task": entry.task,
            "dataset": f"{entry.dataset_path}/{entry.dataset_name or 'default'}",
            "split": entry.training_split,
            "output_type": entry.output_type,
        },
        data_version=file_data_version(path),
    )


def prismatic_seed_picker(settings: MindSettings, family: str, seeds: pa.Table, logger):
    """Generation mode: cluster the seeds' gradient features; items draw from small clusters."""
    from mind_assets.diversity.features import cluster_task_seeds
    from mind_assets.diversity.prismatic import cluster_seed_picker

    clustering = cluster_task_seeds(settings, family, seeds.to_pylist(), logger)
    return cluster_seed_picker(clustering, settings.prismatic_generation_fraction)


@asset(
    partitions_def=task_families_partitions,
    deps=[task_seeds],
    group_name="task_qa",
    kinds={"vllm", "parquet"},
    pool="llm",
    # One run per partition in backfills: each run loads one engine for one whole batch, and
    # Dagster's single-run backfills mishandle partial multi-partition selections.
    backfill_policy=BackfillPolicy.multi_run(1),
    code_version="1",
    description="New items of the same skill as the seeds, in multiple-choice and open-ended "
    "form, with reasoning and distractor explanations; filtered and decontaminated against the "
    "task's evaluation splits. Rejected rows go to <family>.quarantine.parquet.",
)
def task_qa(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    settings = get_settings()
    family = context.partition_key
    entry = read_catalog_entry(settings, family)
    seeds = pq.read_table(asset_path(settings.data_dir, "task_seeds", family))
    kind = "multiple_choice" if entry.output_type == "multiple_choice" else "open_ended"
    prompts = TaskQAPrompts(
        generate=load_prompt(settings.prompts_dir / "task_qa" / f"generate_{kind}.yaml"),
        enrich=load_prompt(settings.prompts_dir / "task_qa" / "enrich_multiple_choice.yaml"),
    )
    eval_texts = load_eval_texts(entry, settings.task_mirror)
    if not eval_texts:
        context.log.warning(
            "%s: no evaluation split found; decontamination had nothing to check", family
        )
    seed_picker = None
    if settings.task_qa_seed_selection == "prismatic":
        seed_picker = prismatic_seed_picker(settings, family, seeds, context.log)
    result = run_task_qa(
        entry=entry,
        seeds=seeds,
        eval_texts=eval_texts,
        prompts=prompts,
        chat=llm.chat,
        identity=llm.identity(),
        requests_dir=asset_path(settings.data_dir, "_requests", "task_qa", family, suffix=""),
        n_items=settings.task_qa_items,
        shots=settings.task_qa_shots,
        base_seed=settings.seed,
        batch_size=llm.requests_per_batch(settings.batch_size),
        max_tokens_override=settings.max_tokens,
        seed_picker=seed_picker,
        logger=context.log,
    )
    out = write_parquet_atomic(result.accepted, asset_path(settings.data_dir, "task_qa", family))
    quarantine = write_parquet_atomic(
        result.quarantine,
        asset_path(settings.data_dir, "task_qa", family, suffix=".quarantine.parquet"),
    )
    generated = result.accepted.num_rows + result.quarantine.num_rows
    metrics_store(settings.data_dir).record_aggregates(
        "task_qa",
        family,
        {
            "generated": generated,
            "accepted": result.accepted.num_rows,
            "eval_texts": len(eval_texts),
            **{f"rejected/{rule}": n for rule, n in result.rejections_per_rule.items()},
        },
    )
    return MaterializeResult(
        metadata={
            **parquet_metadata(result.accepted, out, ["form", "question", "answer", "reasoning"]),
            "quarantine_path": MetadataValue.path(str(quarantine)),
            "generated_rows": generated,
            "accepted": result.accepted.num_rows,
            "acceptance_rate": result.accepted.num_rows / generated if generated else 0.0,
            "rejections_per_rule": MetadataValue.md(
                markdown_table(
                    [{"rule": r, "rejected": n} for r, n in result.rejections_per_rule.items()]
                )
            ),
            "decontaminated_against": len(eval_texts),
            "engine": MetadataValue.json(llm.engine_metadata()),
            "generate_prompt": f"{prompts.generate.id}@{prompts.generate.version}",
            "enrich_prompt": f"{prompts.enrich.id}@{prompts.enrich.version}",
            "requests": MetadataValue.json(
                [{"generated": s.generated, "reused": s.reused} for s in result.stats]
            ),
            "quarantine_sample": MetadataValue.md(
                "\n".join(
                    f"- {json.dumps(r['rejected_by'])}: {(r['raw_output'] or '')[:160]!r}"
                    for r in result.quarantine.slice(0, 5).to_pylist()
                )
                or "_none_"
            ),
        },
        data_version=file_data_version(out),
    )
