"""`filtered_conversations` (accepted rows, a quarantine beside them, decisions in DuckDB) and
`longest_conversations`, the longest accepted conversation per chunk."""

from pathlib import Path

import pyarrow.compute as pc
from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetSelection,
    AutomationCondition,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    asset,
)

from mind_assets.conversations.assets import conversations, shard_and_style, shard_style_partitions
from mind_assets.conversations.longest import longest_per_chunk
from mind_assets.conversations.outputs import CONVERSATIONS
from mind_assets.conversations.styles import CONVERSATION_STYLE_KEYS, style_prompt_path
from mind_assets.corpus.assets import chunks, shards_partitions
from mind_assets.corpus.outputs import CHUNKS
from mind_assets.filtering.checks import FILTER_CHECKS, evaluate_filter_checks
from mind_assets.filtering.outputs import FILTERED_CONVERSATIONS, LONGEST_CONVERSATIONS
from mind_assets.filtering.stage import filter_partition, summarize_filtered_partition
from mind_assets.lib import object_store
from mind_assets.lib.metadata import file_data_version, parquet_metadata, stage_result
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.quarantine import write_split
from mind_assets.lib.storage import read_output, write_parquet_version
from mind_assets.lib.versions import VersionSource, content_version, version_source_asset
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import MindSettings, get_settings


def _chunk_texts(path: Path) -> dict[str, str]:
    """chunk_id -> text; empty when the shard's chunks are gone (every row is then rejected)."""
    object_store.pull(path)
    if not path.is_file():
        return {}
    table = read_output(path, columns=["chunk_id", "text"])
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
    ],
    check_specs=[
        AssetCheckSpec(name, asset="filtered_conversations", blocking=blocking, description=text)
        for name, (blocking, text) in FILTER_CHECKS.items()
    ],
    # A threshold change is left to the budgeted regeneration schedule, like a prompt edit.
    automation_condition=AutomationCondition.eager().ignore(
        AssetSelection.assets(filter_config.key)
    ),
    group_name="filtering",
    kinds={"parquet", "duckdb"},
    code_version="1",
    description="Conversations that pass every heuristic rule; rejected rows go to "
    "<style>.quarantine.parquet beside it with the rules that rejected them.",
)
def filtered_conversations(context: AssetExecutionContext) -> MaterializeResult:
    settings = get_settings()
    thresholds = settings.filters
    shard, style = shard_and_style(context)
    keys = {"shard": shard, "style": style}
    prompt = load_prompt(style_prompt_path(settings.prompts_dir, style))
    partition = filter_partition(
        read_output(CONVERSATIONS.path(settings.data_dir, keys)),
        _chunk_texts(CHUNKS.path(settings.data_dir, keys)),
        thresholds,
        {style: "\n".join(filter(None, [prompt.system, prompt.instruction_text]))},
        shard=shard,
        style=style,
        form=prompt.style.form if prompt.style else "conversation",
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
    store.record_aggregates(
        "filtered_conversations",
        f"{shard}|{style}",
        {
            "generated": partition.generated,
            "accepted": partition.accepted.num_rows,
            "acceptance_rate": partition.acceptance_rate,
            **{f"rejected/{rule}": n for rule, n in counts.items()},
        },
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
    return stage_result(
        summarize_filtered_partition(partition, outcomes, q_path),
        data_version=file_data_version(out_path),
        filter_profile=thresholds.profile,
        **parquet_metadata(partition.accepted, out_path, ["chunk_id", "n_turns", "text"]),
    )


@asset(
    partitions_def=shards_partitions,
    deps=[
        AssetDep(
            filtered_conversations,
            partition_mapping=MultiToSingleDimensionPartitionMapping("shard"),
        )
    ],
    automation_condition=AutomationCondition.eager(),
    group_name="mind",
    kinds={"parquet"},
    code_version="1",
    description="For each chunk, the longest accepted conversation across the styles filtered "
    "for the shard (the MIND paper's strongest variant).",
)
def longest_conversations(context: AssetExecutionContext) -> MaterializeResult:
    settings = get_settings()
    shard = context.partition_key
    style_files = {
        style: path
        for style in CONVERSATION_STYLE_KEYS  # a rephrase is never "the longest conversation"
        if (
            path := FILTERED_CONVERSATIONS.path(settings.data_dir, {"shard": shard, "style": style})
        ).is_file()
    }
    if not style_files:
        raise FileNotFoundError(f"no filtered conversations yet for shard {shard!r}")
    table = longest_per_chunk(
        [read_output(p) for p in style_files.values()], styles=CONVERSATION_STYLE_KEYS
    )
    out_path = write_parquet_version(
        table, LONGEST_CONVERSATIONS.path(settings.data_dir, {"shard": shard})
    )
    chosen = pc.value_counts(table.column("style")).to_pylist() if table.num_rows else []
    return MaterializeResult(
        metadata={
            **parquet_metadata(table, out_path, ["chunk_id", "style", "completion_tokens", "text"]),
            "styles_considered": sorted(style_files),
            "chosen_style_counts": MetadataValue.json({c["values"]: c["counts"] for c in chosen}),
        },
        data_version=file_data_version(out_path),
    )
