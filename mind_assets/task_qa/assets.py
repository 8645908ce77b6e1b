"""Task-seeded Q&A assets: the seed catalog, normalised seeds per family, generated Q&A."""

from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

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
from mind_assets.lib.report import markdown_table
from mind_assets.lib.storage import asset_path, read_output, validate_name, write_parquet_version
from mind_assets.lib.versions import VersionSource, content_version, version_source_asset
from mind_assets.llm.features import features_for
from mind_assets.llm.pods import llm_step_tags
from mind_assets.llm.requests import derive_seed
from mind_assets.llm.resource import LLMResource
from mind_assets.llm.versions import llm_config
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import MindSettings, get_settings
from mind_assets.task_qa.catalog import CatalogEntry, build_catalog
from mind_assets.task_qa.majority import verify_by_majority
from mind_assets.task_qa.outputs import (
    PRISMATIC_TASK_QA,
    TASK_FAMILIES_PARTITION,
    TASK_QA,
    TASK_SEEDS,
)
from mind_assets.task_qa.prismatic import (
    cluster_seed_picker,
    cluster_task_seeds,
    prismatic_cache_name,
    run_prismatic_rounds,
)
from mind_assets.task_qa.schema import SEED_SCHEMA
from mind_assets.task_qa.seeds import (
    EvalTexts,
    decontamination_splits,
    load_decontamination_texts,
    load_seed_split,
    normalize_split,
)
from mind_assets.task_qa.stage import (
    TaskQAPrompts,
    parse_retry_metadata,
    run_task_qa,
    summarize_task_qa,
)

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


def read_catalog(settings: MindSettings) -> list[CatalogEntry]:
    path = catalog_path(settings)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: materialize task_seed_catalog first")
    return [CatalogEntry(**row) for row in read_output(path).to_pylist()]


def read_catalog_entry(settings: MindSettings, family: str) -> CatalogEntry:
    for entry in read_catalog(settings):
        if entry.family == family:
            return entry
    raise KeyError(f"task family {family!r} is not in the catalog {catalog_path(settings)}")


def decontamination_texts(settings: MindSettings, entry: CatalogEntry) -> EvalTexts:
    """The evaluation texts a family is decontaminated against: its own splits, every configured
    family's (unless MIND_TASK_QA__DECONTAMINATE_ACROSS_FAMILIES=false) and the extra splits."""
    others: list[CatalogEntry] = []
    if settings.task_qa.decontaminate_across_families:
        catalog = read_catalog(settings)
        families, _ = selected_families(catalog, settings.task_qa.families)
        wanted = set(families) - {entry.family}
        others = [e for e in catalog if e.family in wanted]
    splits = decontamination_splits(entry, others, settings.task_qa.decontamination_extra)
    return load_decontamination_texts(splits, settings.task_mirror)


@asset(
    group_name="task_qa",
    kinds={"parquet"},
    code_version="2",
    description="Every lm-evaluation-harness task with its seed eligibility (a training split "
    "distinct from its test and validation splits) and the reason each refused task was refused. "
    "Registers the configured families as `task_families` partitions.",
)
def task_seed_catalog(context: AssetExecutionContext) -> MaterializeResult:
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
            "answer_check": entry.answer_check,
            "licence": entry.licence or "unknown",
            "licence_source": entry.licence_source or "-",
        },
        data_version=file_data_version(path),
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
    op_tags=llm_step_tags(),
    # One run per partition in backfills: each run loads one engine for one whole batch, and
    # Dagster's single-run backfills mishandle partial multi-partition selections.
    backfill_policy=BackfillPolicy.multi_run(1),
    code_version="2",
    description="New items of the same skill as the seeds, in multiple-choice and open-ended "
    "form, with reasoning and distractor explanations; filtered and decontaminated against the "
    "evaluation splits of every configured family plus GSM8K test. Rejected rows go to "
    "<family>.quarantine.parquet.",
)
def task_qa(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    settings = get_settings()
    family = context.partition_key
    entry = read_catalog_entry(settings, family)
    seeds = read_output(TASK_SEEDS.path(settings.data_dir, {"family": family}))
    prompts = task_qa_prompts_for(settings, entry.output_type)
    evaluation = decontamination_texts(settings, entry)
    eval_texts = evaluation.texts
    if not eval_texts:
        context.log.warning(
            "%s: no evaluation split found; decontamination had nothing to check", family
        )
    elif evaluation.missing:
        context.log.warning(
            "%s: evaluation splits not found, not decontaminated against: %s",
            family,
            evaluation.missing,
        )
    seed_picker = None
    if settings.task_qa.seed_selection == "prismatic":
        seed_picker = prismatic_seed_picker(settings, family, seeds, context.log)
    result = run_task_qa(
        entry=entry,
        seeds=seeds,
        eval_texts=eval_texts,
        eval_labels=evaluation.labels,
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
            **parse_retry_metadata(result),
            **usage,
        },
    )
    summary = summarize_task_qa(
        result,
        prompts=prompts,
        quarantine_path=quarantine,
        eval_texts=len(eval_texts),
        engine=llm.engine_metadata(),
        eval_splits=evaluation.per_split,
        licence=entry.licence,
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
    kinds={"torch", "vllm", "parquet"},
    pool="llm",
    op_tags=llm_step_tags(),
    backfill_policy=BackfillPolicy.multi_run(1),
    code_version="2",
    description="Prismatic Synthesis rounds on a family's task Q&A (MIND_DIVERSITY__PRISMATIC_"
    "ROUNDS, default 2). The pool is the seeds plus the items kept so far, featurised alike "
    "(question -> reasoning and answer). Each round clusters the pool (spherical k-means over "
    "proxy-model gradients, k = 10% of the pool); round 1 filters task_qa's items, later rounds "
    "generate from the smallest clusters; an item is kept when it lands in the smaller clusters "
    "and, for math, when the majority of sampled solutions agrees with its answer. Rows record "
    "round, cluster, reason and votes; the G-Vendi of the pool, the kept and the new items per "
    "round goes to the metadata and the metrics store (prismatic_rounds).",
)
def prismatic_task_qa(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    settings = get_settings()
    diversity = settings.diversity
    family = context.partition_key
    entry = read_catalog_entry(settings, family)
    seeds = read_output(TASK_SEEDS.path(settings.data_dir, {"family": family})).to_pylist()
    items = read_output(TASK_QA.path(settings.data_dir, {"family": family})).to_pylist()
    requests_dir = asset_path(
        settings.data_dir, "_requests", "prismatic_task_qa", family, suffix=""
    )
    batch_size = llm.requests_per_batch(settings.batch_size)
    stats = []
    # Generation rounds re-sample replies that do not parse, as task_qa does; summed over rounds.
    parse_retries: Counter[str] = Counter()

    # Every round is decontaminated like task_qa: against every configured family's evaluation
    # splits and the extra ones.
    evaluation = decontamination_texts(settings, entry)

    def generate(round_: int, pool_rows: list[dict], picker):
        result = run_task_qa(
            entry=entry,
            seeds=pa.Table.from_pylist(pool_rows, schema=SEED_SCHEMA),
            eval_texts=evaluation.texts,
            eval_labels=evaluation.labels,
            prompts=task_qa_prompts_for(settings, entry.output_type),
            chat=llm.chat,
            identity=llm.identity(),
            requests_dir=requests_dir / f"round_{round_}",
            settings=settings.task_qa,
            base_seed=derive_seed(settings.seed, "prismatic", f"round_{round_}"),
            batch_size=batch_size,
            max_tokens_cap=settings.max_tokens,
            seed_picker=picker,
            logger=context.log,
        )
        stats.extend(result.stats)
        parse_retries.update(parse_retry_metadata(result))
        return result.accepted.to_pylist(), result.quarantine.to_pylist()

    def verify(round_: int, math_items):
        verdicts, run_stats = verify_by_majority(
            math_items,
            load_prompt(settings.prompts_dir / "task_qa" / "solve.yaml"),
            llm.chat,
            requests_dir=requests_dir / f"verify_{round_}",
            samples=diversity.prismatic_verify_samples,
            model_name=llm.identity().model,
            base_seed=settings.seed,
            family=family,
            batch_size=batch_size,
            max_tokens_cap=settings.max_tokens,
            logger=context.log,
        )
        stats.append(run_stats)
        return verdicts

    def featurise(samples):
        _, cached = features_for(settings, samples, prismatic_cache_name(family), context.log)
        return cached.features

    is_math = entry.output_type != "multiple_choice"
    result = run_prismatic_rounds(
        seeds=seeds,
        first_items=items,
        rounds=diversity.prismatic_rounds,
        native_form=native_form(entry),
        featurise=featurise,
        generate=generate,
        verify=verify if is_math and diversity.prismatic_verify_samples else None,
        cluster_fraction=diversity.prismatic_cluster_fraction,
        keep_fraction=diversity.prismatic_keep_fraction,
        generation_fraction=diversity.prismatic_generation_fraction,
        seed=settings.seed,
        logger=context.log,
    )
    written = write_split(
        PRISMATIC_TASK_QA,
        settings.data_dir,
        {"family": family},
        pa.Table.from_pylist(result.kept, schema=PRISMATIC_TASK_QA.schema),
        pa.Table.from_pylist(result.dropped, schema=PRISMATIC_TASK_QA.quarantine_schema),
    )
    out = written.accepted_path
    rounds = [asdict(r) for r in result.rounds]
    store = metrics_store(settings.data_dir)
    now = datetime.now(UTC)
    store.replace_partition(
        "prismatic_rounds",
        {"family": family},
        pa.Table.from_pylist(
            [
                {"family": family, "run_id": context.run.run_id, **r, "recorded_at": now}
                for r in rounds
            ]
        ),
    )
    usage = llm.usage(stats)
    store.record_aggregates(
        "prismatic_task_qa",
        family,
        {
            "kept": len(result.kept),
            "dropped": len(result.dropped),
            **{f"g_vendi_pool/round_{r['round']}": r["g_vendi_pool"] for r in rounds},
            **usage,
        },
    )
    return MaterializeResult(
        metadata={
            "rounds": MetadataValue.md(markdown_table(rounds)),
            **{f"g_vendi_pool_round_{r['round']}": r["g_vendi_pool"] for r in rounds},
            **{f"g_vendi_kept_round_{r['round']}": r["g_vendi_kept"] for r in rounds[1:]},
            "seeds": len(seeds),
            "pool": rounds[-1]["pool_after"],
            "kept": len(result.kept),
            "quarantined": len(result.dropped),
            "majority_check": (
                f"{diversity.prismatic_verify_samples} samples per item"
                if is_math and diversity.prismatic_verify_samples
                else "off"
            ),
            **parse_retries,
            "path": MetadataValue.path(str(out)),
            **usage,
        },
        data_version=file_data_version(out),
    )
