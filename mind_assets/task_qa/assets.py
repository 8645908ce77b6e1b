"""Task-seeded Q&A assets: the seed catalog, normalised seeds per family, generated Q&A, and the
items the Prismatic rounds keep."""

from collections import Counter

import pyarrow as pa
from dagster import (
    AssetDep,
    AssetExecutionContext,
    DagsterInstance,
    DynamicPartitionsDefinition,
    MaterializeResult,
    asset,
)

from mind_assets.decontamination.assets import benchmark_index
from mind_assets.decontamination.check import decontaminate_split
from mind_assets.decontamination.steps import current_index, report_check, with_judge
from mind_assets.lib.metadata import output_result
from mind_assets.lib.outputs import OutputFamily, Partition
from mind_assets.lib.quarantine import write_split
from mind_assets.lib.storage import requests_dir, validate_name, write_parquet_version
from mind_assets.lib.versions import VersionSource, content_version, version_source_asset
from mind_assets.llm.pods import generating_asset
from mind_assets.llm.resource import LLMResource
from mind_assets.llm.versions import llm_config
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import MindSettings, get_settings
from mind_assets.task_qa.catalog import CatalogEntry, build_catalog
from mind_assets.task_qa.families import (
    catalog_output_types,
    catalog_path,
    native_form,
    read_catalog_entry,
    require_own_benchmark,
    selected_families,
    task_qa_prompts_for,
)
from mind_assets.task_qa.outputs import (
    PRISMATIC_TASK_QA,
    TASK_FAMILIES_PARTITION,
    TASK_QA,
    TASK_SEEDS,
)
from mind_assets.task_qa.prismatic import (
    cluster_seed_picker,
    cluster_task_seeds,
    run_prismatic_rounds,
)
from mind_assets.task_qa.prismatic_steps import (
    PrismaticSteps,
    prismatic_aggregates,
    prismatic_round_rows,
    prismatic_summary,
)
from mind_assets.task_qa.seeds import load_seed_split, normalize_split
from mind_assets.task_qa.stage import (
    FamilyGeneration,
    TaskQAResult,
    parse_retry_metadata,
    run_task_qa,
    summarize_task_qa,
)

task_families_partitions = DynamicPartitionsDefinition(name=TASK_FAMILIES_PARTITION)
# What the stage's assets per task family share (task_seed_catalog registers the families).
PER_FAMILY = {"partitions_def": task_families_partitions, "group_name": "task_qa"}


def family_partition(
    context: AssetExecutionContext, declared: OutputFamily
) -> tuple[MindSettings, Partition, CatalogEntry]:
    """The settings, the partition of `declared` this run writes, and the catalog entry of its
    task family."""
    settings = get_settings()
    out = declared.partition(settings.data_dir, context.partition_key)
    return settings, out, read_catalog_entry(settings, out.keys["family"])


@asset(
    group_name="task_qa",
    kinds={"parquet"},
    code_version="2",
)
def task_seed_catalog(context: AssetExecutionContext) -> MaterializeResult:
    """Every lm-evaluation-harness task with its seed eligibility (a training split distinct from
    its test and validation splits) and the reason each refused task was refused. Registers the
    configured families as `task_families` partitions.
    """
    settings = get_settings()
    entries = build_catalog(settings.task_mirror)
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
    return output_result(
        table,
        path,
        preview=["task", "eligible", "reason", "output_type"],
        eligible=sum(e.eligible for e in entries),
        refused=sum(not e.eligible for e in entries),
        refused_by_reason=dict(refused),
        selected_families=families,
        unusable_families=unusable,
    )


@asset(
    **PER_FAMILY,
    deps=[task_seed_catalog],
    kinds={"parquet"},
    code_version="1",
)
def task_seeds(context: AssetExecutionContext) -> MaterializeResult:
    """A task's training split, rendered through lm-eval's own task object and normalised:
    question, choices, answer as text (never a letter), rationale.
    """
    settings, out, entry = family_partition(context, TASK_SEEDS)
    train = load_seed_split(entry, entry.training_split, settings.task_mirror)
    table = normalize_split(entry, train, limit=settings.task_qa.seed_limit)
    out.write(table)
    return output_result(
        table,
        out.path,
        preview=["question", "choices", "answer"],
        task=entry.task,
        dataset=f"{entry.dataset_path}/{entry.dataset_name or 'default'}",
        split=entry.training_split,
        output_type=entry.output_type,
        answer_check=entry.answer_check,
        licence=entry.licence or "unknown",
        licence_source=entry.licence_source or "-",
    )


def task_qa_prompt_versions(settings: MindSettings, instance: DagsterInstance) -> dict[str, str]:
    """Per registered family, the versions of the prompt files it uses (a family not yet in the
    catalog cannot be generated, and has none)."""
    output_types = catalog_output_types(settings)
    versions = {}
    for family in instance.get_dynamic_partitions(TASK_FAMILIES_PARTITION):
        if family in output_types:
            prompts = task_qa_prompts_for(settings, output_types[family])
            versions[family] = content_version([prompts.generate.version, prompts.enrich.version])
    return versions


def task_qa_config_version(settings: MindSettings, instance: DagsterInstance) -> str:
    # Families and seed_limit decide which partitions and seeds exist, and the regeneration
    # settings how fast a schedule refreshes them, not how one is generated.
    exclude = {"families", "seed_limit", "regeneration_budget", "regeneration_scan_limit"}
    inputs: dict = {"task_qa": settings.task_qa.model_dump(exclude=exclude)}
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


def task_qa_aggregates(result: TaskQAResult, usage: dict[str, float]) -> dict[str, float]:
    """The per-partition numbers `mind metrics` shows for a family's task Q&A."""
    return {
        "generated": result.accepted.num_rows + result.quarantine.num_rows,
        "accepted": result.accepted.num_rows,
        **{f"rejected/{rule}": n for rule, n in result.rejections_per_rule.items()},
        **parse_retry_metadata(result),
        **usage,
    }


@asset(
    **PER_FAMILY,
    **generating_asset(),
    deps=[task_seeds, AssetDep(task_qa_prompts), task_qa_config, llm_config, benchmark_index],
    kinds={"vllm", "parquet"},
    code_version="2",
)
def task_qa(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    """New items of the same skill as the seeds, in multiple-choice and open-ended form, with
    reasoning and distractor explanations; filtered, and decontaminated against the benchmark
    index (which must hold the family's own evaluation split). Rejected rows go to
    <family>.quarantine.parquet.
    """
    settings, out, entry = family_partition(context, TASK_QA)
    seeds = TASK_SEEDS.partition(settings.data_dir, out.keys).read()
    prompts = task_qa_prompts_for(settings, entry.output_type)
    decontamination = current_index(settings)
    require_own_benchmark(entry, decontamination)
    judge = with_judge(decontamination, settings, llm, "task_qa", out.keys, context.log)
    seed_picker = None
    if settings.task_qa.seed_selection == "prismatic":
        seed_picker = prismatic_seed_picker(settings, entry.family, seeds, context.log)
    run = FamilyGeneration(
        entry=entry,
        prompts=prompts,
        chat=llm.chat,
        identity=llm.identity(),
        requests_dir=requests_dir(settings.data_dir, "task_qa", entry.family),
        settings=settings.task_qa,
        base_seed=settings.seed,
        batch_size=llm.requests_per_batch(settings.batch_size),
        max_tokens_cap=settings.max_tokens,
        logger=context.log,
    )
    result = run_task_qa(run, seeds, seed_picker=seed_picker, decontamination=decontamination)
    written = write_split(TASK_QA, settings.data_dir, out.keys, result.accepted, result.quarantine)
    usage = llm.usage([*result.stats, *(judge.stats if judge else [])])
    metrics_store(settings.data_dir).record_aggregates(
        "task_qa", entry.family, task_qa_aggregates(result, usage)
    )
    summary = summarize_task_qa(
        result,
        prompts=prompts,
        quarantine_path=written.quarantine_path,
        engine=llm.engine_metadata(),
        licence=entry.licence,
    )
    return output_result(
        result.accepted,
        written.accepted_path,
        preview=["form", "question", "answer", "reasoning"],
        summary=summary,
        **report_check(settings, "task_qa", entry.family, result.decontamination),
        **usage,
    )


@asset(
    **PER_FAMILY,
    **generating_asset(),
    deps=[task_seeds, task_qa, benchmark_index],
    kinds={"torch", "vllm", "parquet"},
    code_version="2",
)
def prismatic_task_qa(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    """Prismatic Synthesis rounds on a family's task Q&A (MIND_DIVERSITY__PRISMATIC_ROUNDS, default
    2). The pool is the seeds plus the items kept so far, featurised alike (question ->
    reasoning and answer). Each round clusters the pool (spherical k-means over proxy-model
    gradients, k = 10% of the pool); round 1 filters task_qa's items, later rounds generate from
    the smallest clusters; an item is kept when it lands in the smaller clusters and, for math,
    when the majority of sampled solutions agrees with its answer. Rows record round, cluster,
    reason and votes; the G-Vendi of the pool, the kept and the new items per round goes to the
    metadata and the metrics store (prismatic_rounds).
    """
    settings, out, entry = family_partition(context, PRISMATIC_TASK_QA)
    diversity = settings.diversity
    seeds = TASK_SEEDS.partition(settings.data_dir, out.keys).read().to_pylist()
    decontamination = current_index(settings)
    require_own_benchmark(entry, decontamination)
    judge = with_judge(decontamination, settings, llm, "prismatic_task_qa", out.keys, context.log)
    steps = PrismaticSteps(
        settings,
        entry,
        llm.chat,
        llm.identity(),
        llm.requests_per_batch(settings.batch_size),
        requests_dir(settings.data_dir, "prismatic_task_qa", entry.family),
        context.log,
        decontamination=decontamination,
    )
    majority = entry.output_type != "multiple_choice" and diversity.prismatic_verify_samples
    result = run_prismatic_rounds(
        seeds=seeds,
        first_items=TASK_QA.partition(settings.data_dir, out.keys).read().to_pylist(),
        rounds=diversity.prismatic_rounds,
        native_form=native_form(entry),
        featurise=steps.featurise,
        generate=steps.generate,
        verify=steps.verify if majority else None,
        cluster_fraction=diversity.prismatic_cluster_fraction,
        keep_fraction=diversity.prismatic_keep_fraction,
        generation_fraction=diversity.prismatic_generation_fraction,
        seed=settings.seed,
        logger=context.log,
    )
    # Round 1 kept task_qa's items as they were checked then: every kept item is checked
    # against the current index before it is written.
    checked = decontaminate_split(
        decontamination,
        pa.Table.from_pylist(result.kept, schema=PRISMATIC_TASK_QA.schema),
        pa.Table.from_pylist(result.dropped, schema=PRISMATIC_TASK_QA.quarantine_schema),
        PRISMATIC_TASK_QA.quarantine_schema,
    )
    kept = checked.accepted
    written = write_split(PRISMATIC_TASK_QA, settings.data_dir, out.keys, kept, checked.quarantine)
    usage = llm.usage([*steps.stats, *(judge.stats if judge else [])])
    store = metrics_store(settings.data_dir)
    store.replace_partition(
        "prismatic_rounds", out.keys, prismatic_round_rows(result, entry.family, context.run.run_id)
    )
    store.record_aggregates("prismatic_task_qa", entry.family, prismatic_aggregates(result, usage))
    summary = prismatic_summary(
        result,
        seeds=len(seeds),
        majority_check=f"{diversity.prismatic_verify_samples} samples per item"
        if majority
        else "off",
        parse_retries=steps.parse_retries,
    )
    return output_result(
        kept,
        written.accepted_path,
        summary=summary,
        **report_check(settings, "prismatic_task_qa", entry.family, checked.record),
        **usage,
    )
