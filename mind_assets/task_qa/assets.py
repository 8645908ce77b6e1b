"""Task-seeded Q&A assets: the seed catalog, normalised seeds per family, generated Q&A."""

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
from dagster import (
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    DagsterInstance,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from mind_assets.lib.metadata import file_data_version, parquet_metadata, stage_result
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.quarantine import write_split
from mind_assets.lib.storage import asset_path, read_output, validate_name, write_parquet_version
from mind_assets.lib.versions import VersionSource, content_version, version_source_asset
from mind_assets.llm.features import Sample, features_for
from mind_assets.llm.resource import LLMResource
from mind_assets.llm.versions import llm_config
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import MindSettings, get_settings
from mind_assets.task_qa.catalog import CatalogEntry, build_catalog
from mind_assets.task_qa.outputs import (
    PRISMATIC_TASK_QA,
    TASK_FAMILIES_PARTITION,
    TASK_QA,
    TASK_SEEDS,
)
from mind_assets.task_qa.prismatic import (
    cluster_seed_picker,
    cluster_shares,
    cluster_task_seeds,
    prismatic_filter,
)
from mind_assets.task_qa.seeds import load_eval_texts, load_seed_split, normalize_split
from mind_assets.task_qa.stage import TaskQAPrompts, run_task_qa, summarize_task_qa

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
    rows = read_output(path).to_pylist()
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
    path = write_parquet_version(table, catalog_path(settings))
    families, unusable = selected_families(entries, settings.task_qa.families)
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
    table = normalize_split(entry, train, limit=settings.task_qa.seed_limit)
    path = write_parquet_version(table, TASK_SEEDS.path(settings.data_dir, {"family": family}))
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


def task_qa_prompts_for(settings: MindSettings, output_type: str | None) -> TaskQAPrompts:
    """The prompt files a family generates with, chosen by its output type."""
    kind = "multiple_choice" if output_type == "multiple_choice" else "open_ended"
    return TaskQAPrompts(
        generate=load_prompt(settings.prompts_dir / "task_qa" / f"generate_{kind}.yaml"),
        enrich=load_prompt(settings.prompts_dir / "task_qa" / "enrich_multiple_choice.yaml"),
    )


def task_qa_prompt_versions(settings: MindSettings, instance: DagsterInstance) -> dict[str, str]:
    """Per registered family, the versions of the prompt files it uses (a family not yet in the
    catalog cannot be generated, and has none)."""
    path = catalog_path(settings)
    if not path.is_file():
        return {}
    output_types: dict[str, str | None] = {}
    for row in read_output(path, columns=["family", "output_type"]).to_pylist():
        output_types.setdefault(row["family"], row["output_type"])
    versions = {}
    for family in instance.get_dynamic_partitions(TASK_FAMILIES_PARTITION):
        if family in output_types:
            prompts = task_qa_prompts_for(settings, output_types[family])
            versions[family] = content_version([prompts.generate.version, prompts.enrich.version])
    return versions


def task_qa_config_version(settings: MindSettings, instance: DagsterInstance) -> str:
    # Families and seed_limit decide which partitions and seeds exist, not how one is generated.
    inputs: dict = {"task_qa": settings.task_qa.model_dump(exclude={"families", "seed_limit"})}
    if settings.task_qa.seed_selection == "prismatic":
        inputs["diversity"] = settings.diversity.model_dump(
            exclude={"batch_size", "prismatic_keep_fraction"}
        )
    return content_version(inputs)


TASK_QA_PROMPTS = VersionSource(
    "task_qa_prompts",
    "The task Q&A prompt files each family uses (generate_<multiple_choice|open_ended> and "
    "enrich_multiple_choice), versioned by content hash. Observing it after a prompt edit marks "
    "only the families that use that file unsynced.",
    task_qa_prompt_versions,
    partitions_def=task_families_partitions,
    group_name="task_qa",
)
task_qa_prompts = version_source_asset(TASK_QA_PROMPTS)

TASK_QA_CONFIG = VersionSource(
    "task_qa_config",
    "How task Q&A generates and filters (MIND_TASK_QA__* but the family list and seed limit; the "
    "Prismatic settings when seeds are drawn from clusters), hashed.",
    task_qa_config_version,
    group_name="task_qa",
)
task_qa_config = version_source_asset(TASK_QA_CONFIG)


def prismatic_seed_picker(settings: MindSettings, family: str, seeds: pa.Table, logger):
    """Generation mode: cluster the seeds' gradient features; items draw from small clusters."""
    clustering = cluster_task_seeds(settings, family, seeds.to_pylist(), logger)
    return cluster_seed_picker(clustering, settings.diversity.prismatic_generation_fraction)


@asset(
    partitions_def=task_families_partitions,
    deps=[task_seeds, AssetDep(task_qa_prompts), task_qa_config, llm_config],
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
    seeds = read_output(TASK_SEEDS.path(settings.data_dir, {"family": family}))
    prompts = task_qa_prompts_for(settings, entry.output_type)
    eval_texts = load_eval_texts(entry, settings.task_mirror)
    if not eval_texts:
        context.log.warning(
            "%s: no evaluation split found; decontamination had nothing to check", family
        )
    seed_picker = None
    if settings.task_qa.seed_selection == "prismatic":
        seed_picker = prismatic_seed_picker(settings, family, seeds, context.log)
    result = run_task_qa(
        entry=entry,
        seeds=seeds,
        eval_texts=eval_texts,
        prompts=prompts,
        chat=llm.chat,
        identity=llm.identity(),
        requests_dir=asset_path(settings.data_dir, "_requests", "task_qa", family, suffix=""),
        settings=settings.task_qa,
        base_seed=settings.seed,
        batch_size=llm.requests_per_batch(settings.batch_size),
        max_tokens_cap=settings.max_tokens,
        seed_picker=seed_picker,
        logger=context.log,
    )
    written = write_split(
        TASK_QA, settings.data_dir, {"family": family}, result.accepted, result.quarantine
    )
    out, quarantine = written.accepted_path, written.quarantine_path
    generated = result.accepted.num_rows + result.quarantine.num_rows
    usage = llm.usage(result.stats)
    metrics_store(settings.data_dir).record_aggregates(
        "task_qa",
        family,
        {
            "generated": generated,
            "accepted": result.accepted.num_rows,
            "eval_texts": len(eval_texts),
            **{f"rejected/{rule}": n for rule, n in result.rejections_per_rule.items()},
            **usage,
        },
    )
    summary = summarize_task_qa(
        result,
        prompts=prompts,
        quarantine_path=quarantine,
        eval_texts=len(eval_texts),
        engine=llm.engine_metadata(),
    )
    return stage_result(
        summary,
        data_version=file_data_version(out),
        **parquet_metadata(result.accepted, out, ["form", "question", "answer", "reasoning"]),
        **usage,
    )


@asset(
    partitions_def=task_families_partitions,
    deps=[task_seeds, task_qa],
    group_name="diversity",
    kinds={"torch", "parquet"},
    code_version="1",
    description="Prismatic filter mode on generated task Q&A: spherical k-means (k = 10% of the "
    "pool) over the gradient features of the family's seeds; new items are kept "
    "only when they land in the smaller clusters. Every row records its cluster and the reason.",
)
def prismatic_task_qa(context: AssetExecutionContext) -> MaterializeResult:
    settings = get_settings()
    family = context.partition_key
    seeds = read_output(TASK_SEEDS.path(settings.data_dir, {"family": family})).to_pylist()
    items = read_output(TASK_QA.path(settings.data_dir, {"family": family}))
    new = [
        Sample(r["qa_id"], r["question"] or "", r["text"] or "")
        for r in items.select(["qa_id", "question", "text"]).to_pylist()
    ]
    clustering = cluster_task_seeds(settings, family, seeds, context.log)
    _, new_features = features_for(settings, new, f"task_qa__{family}", context.log)
    decisions = prismatic_filter(
        clustering, new_features.features, settings.diversity.prismatic_keep_fraction
    )
    favoured = clustering.smallest(settings.diversity.prismatic_keep_fraction)
    labels = np.array([d.cluster_id for d in decisions])
    before = cluster_shares(labels, favoured)
    after = (
        cluster_shares(labels[[d.kept for d in decisions]], favoured)
        if any(d.kept for d in decisions)
        else 0.0
    )
    rows = items.to_pylist()
    kept, dropped = [], []
    for row, decision in zip(rows, decisions, strict=True):
        row = {**row, "prismatic_cluster": decision.cluster_id, "prismatic_reason": decision.reason}
        (kept if decision.kept else dropped).append(row)
    rejected = [{**r, "rejected_by": ["prismatic_over_represented"]} for r in dropped]
    written = write_split(
        PRISMATIC_TASK_QA,
        settings.data_dir,
        {"family": family},
        pa.Table.from_pylist(kept, schema=PRISMATIC_TASK_QA.schema),
        pa.Table.from_pylist(rejected, schema=PRISMATIC_TASK_QA.quarantine_schema),
    )
    out = written.accepted_path
    return MaterializeResult(
        metadata={
            "pool": len(seeds),
            "clusters": clustering.k,
            "cluster_sizes": MetadataValue.json(sorted(int(s) for s in clustering.sizes)),
            "new_items": len(new),
            "kept": len(kept),
            "share_in_small_clusters_before": round(before, 4),
            "share_in_small_clusters_after": round(after, 4),
            "path": MetadataValue.path(str(out)),
        },
        data_version=file_data_version(out),
    )
