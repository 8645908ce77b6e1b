"""`filtered_conversations` (accepted rows, a quarantine beside them, decisions in DuckDB) and
`longest_conversations`, the longest accepted conversation per chunk."""

import pyarrow.compute as pc
from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AutomationCondition,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    asset,
)

from mind_assets.conversations.assets import conversations, shard_and_style, shard_style_partitions
from mind_assets.conversations.outputs import CONVERSATIONS
from mind_assets.conversations.styles import CONVERSATION_STYLE_KEYS, style_prompt_path
from mind_assets.corpus.assets import chunks, shards_partitions
from mind_assets.corpus.outputs import CHUNKS
from mind_assets.decontamination.assets import benchmark_index
from mind_assets.decontamination.record import with_record
from mind_assets.decontamination.steps import (
    current_index,
    judge_usage,
    report_check,
    with_judge,
)
from mind_assets.filtering.checks import FILTER_CHECKS, evaluate_filter_checks
from mind_assets.filtering.longest import check_longest, longest_per_chunk
from mind_assets.filtering.outputs import FILTERED_CONVERSATIONS, LONGEST_CONVERSATIONS
from mind_assets.filtering.partition import filter_partition, summarize_filtered_partition
from mind_assets.lib.metadata import output_result
from mind_assets.lib.outputs import Partition
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.quarantine import write_split
from mind_assets.lib.versions import (
    VersionSource,
    content_version,
    eager_ignoring,
    version_source_asset,
)
from mind_assets.llm.resource import LLMResource
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import MindSettings, get_settings


def _chunk_texts(chunks_partition: Partition) -> dict[str, str]:
    """chunk_id -> text; empty when the shard's chunks are gone (every row is then rejected)."""
    if not chunks_partition.is_materialized():
        return {}
    table = chunks_partition.read(columns=["chunk_id", "text"])
    return dict(zip(table["chunk_id"].to_pylist(), table["text"].to_pylist(), strict=True))


# Thresholds that only decide asset checks, not which rows pass.
CHECK_ONLY_THRESHOLDS = {"min_acceptance_rate", "max_near_duplicate_rate"}


def filter_config_version(settings: MindSettings, instance: DagsterInstance) -> str:
    return content_version(settings.filters.model_dump(exclude=CHECK_ONLY_THRESHOLDS))


FILTER_CONFIG = VersionSource(
    "filter_config",
    "The filter profile, disabled rules and every threshold that decides which conversations "
    "pass (MIND_FILTERS__*), hashed. Observing it after a change marks every "
    "filtered_conversations partition unsynced, and nothing upstream.",
    filter_config_version,
    group_name="filtering",
)
filter_config = version_source_asset(FILTER_CONFIG)


@asset(
    partitions_def=shard_style_partitions,
    deps=[
        conversations,
        AssetDep(chunks, partition_mapping=MultiToSingleDimensionPartitionMapping("shard")),
        filter_config,
        benchmark_index,
    ],
    check_specs=[
        AssetCheckSpec(name, asset="filtered_conversations", blocking=blocking, description=text)
        for name, (blocking, text) in FILTER_CHECKS.items()
    ],
    automation_condition=eager_ignoring(filter_config),
    group_name="filtering",
    kinds={"parquet", "duckdb"},
    code_version="1",
)
def filtered_conversations(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    """Conversations that pass every heuristic rule and hold no benchmark item (in their text or in
    the chunk they were written from); rejected rows go to <style>.quarantine.parquet beside it
    with the rules that rejected them.
    """
    settings = get_settings()
    thresholds = settings.filters
    shard, style = shard_and_style(context)
    keys = {"shard": shard, "style": style}
    prompt = load_prompt(style_prompt_path(settings.prompts_dir, style))
    decontamination = current_index(settings)
    judge = with_judge(decontamination, settings, llm, "filtered_conversations", keys, context.log)
    partition = filter_partition(
        CONVERSATIONS.partition(settings.data_dir, keys).read(),
        _chunk_texts(CHUNKS.partition(settings.data_dir, keys)),
        thresholds,
        {style: "\n".join(filter(None, [prompt.system, prompt.instruction_text]))},
        shard=shard,
        style=style,
        form=prompt.style.form if prompt.style else "conversation",
        decontamination=decontamination,
    )
    written = write_split(
        FILTERED_CONVERSATIONS, settings.data_dir, keys, partition.accepted, partition.quarantine
    )
    out_path, q_path = written.accepted_path, written.quarantine_path
    counts = partition.rejections_per_rule
    store = metrics_store(settings.data_dir)
    store.replace_partition(
        "filter_decisions", {"shard": shard, "style": style}, partition.decisions
    )
    usage = llm.usage(judge.stats) if judge else {}
    store.record_aggregates(
        "filtered_conversations",
        f"{shard}|{style}",
        {
            "generated": partition.generated,
            "accepted": partition.accepted.num_rows,
            "acceptance_rate": partition.acceptance_rate,
            **{f"rejected/{rule}": n for rule, n in counts.items()},
            **usage,
        },
    )
    checked = report_check(
        settings, "filtered_conversations", f"{shard}|{style}", partition.decontamination
    )
    outcomes = evaluate_filter_checks(
        out_path,
        q_path,
        generated_rows=partition.generated,
        duplicate_rejections=counts.get("duplicate", 0),
        acceptance_floor=thresholds.acceptance_floor(style),
        max_near_duplicate_rate=thresholds.max_near_duplicate_rate,
    )
    context.log.info(
        "%s/%s: %d of %d accepted (%.0f%%); rejections per rule: %s",
        shard,
        style,
        partition.accepted.num_rows,
        partition.generated,
        100 * partition.acceptance_rate,
        {k: v for k, v in counts.items() if v},
    )
    return output_result(
        partition.accepted,
        out_path,
        preview=["chunk_id", "n_turns", "text"],
        summary=summarize_filtered_partition(partition, outcomes, q_path),
        filter_profile=thresholds.profile,
        **checked,
        **usage,
    )


@asset(
    partitions_def=shards_partitions,
    deps=[
        AssetDep(
            filtered_conversations,
            partition_mapping=MultiToSingleDimensionPartitionMapping("shard"),
        ),
        chunks,
        benchmark_index,
    ],
    automation_condition=AutomationCondition.eager(),
    group_name="filtering",
    kinds={"parquet"},
    code_version="1",
)
def longest_conversations(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    """For each chunk, the longest accepted conversation across the styles filtered for the shard
    (the MIND paper's strongest variant), checked again against the current benchmark index (a
    row it flags is quarantined, and the chunk's next longest taken).
    """
    settings = get_settings()
    out = LONGEST_CONVERSATIONS.partition(settings.data_dir, context.partition_key)
    filtered = {
        style: partition
        for style in CONVERSATION_STYLE_KEYS  # a rephrase is never "the longest conversation"
        if (
            partition := FILTERED_CONVERSATIONS.partition(
                settings.data_dir, {**out.keys, "style": style}
            )
        ).is_materialized()
    }
    if not filtered:
        raise FileNotFoundError(f"no filtered conversations yet for shard {out.key!r}")
    decontamination = current_index(settings)
    judge = with_judge(
        decontamination, settings, llm, "longest_conversations", out.keys, context.log
    )
    checked = check_longest(
        [p.read() for p in filtered.values()],
        _chunk_texts(CHUNKS.partition(settings.data_dir, out.keys)),
        decontamination,
    )
    table = longest_per_chunk([checked.accepted], styles=CONVERSATION_STYLE_KEYS)
    written = write_split(
        LONGEST_CONVERSATIONS,
        settings.data_dir,
        out.keys,
        with_record(table, checked.record),
        checked.quarantine,
    )
    chosen = pc.value_counts(table.column("style")).to_pylist() if table.num_rows else []
    return output_result(
        table,
        written.accepted_path,
        preview=["chunk_id", "style", "completion_tokens", "text"],
        styles_considered=sorted(filtered),
        chosen_style_counts=MetadataValue.json({c["values"]: c["counts"] for c in chosen}),
        quarantined=checked.quarantine.num_rows,
        **report_check(settings, "longest_conversations", out.key, checked.record),
        **judge_usage(settings, llm, judge, "longest_conversations", out.key),
    )
