"""MIND assets: prompt versions per style, and `conversations` per shard × style."""

import time

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    DagsterInstance,
    MaterializeResult,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
    asset,
)

from mind_assets.conversations.generation import (
    conversation_rows,
    plan_conversations,
    summarize_conversations,
)
from mind_assets.conversations.outputs import CONVERSATIONS
from mind_assets.conversations.styles import STYLE_KEYS, style_prompt_path
from mind_assets.corpus.assets import chunks, shards_partitions
from mind_assets.corpus.outputs import CHUNKS
from mind_assets.lib.metadata import output_result
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.storage import requests_dir
from mind_assets.lib.tokenizer import token_counter
from mind_assets.lib.versions import VersionSource, eager_ignoring, version_source_asset
from mind_assets.llm.batch_runner import RequestStore, generate_resumable
from mind_assets.llm.pods import generating_asset
from mind_assets.llm.resource import LLMResource
from mind_assets.llm.versions import llm_config
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import MindSettings, get_settings

style_partitions = StaticPartitionsDefinition(list(STYLE_KEYS))
shard_style_partitions = MultiPartitionsDefinition(
    {"shard": shards_partitions, "style": style_partitions}
)


def mind_prompt_versions(settings: MindSettings, instance: DagsterInstance) -> dict[str, str]:
    """Each style's prompt file, by content hash (its sampling parameters included)."""
    return {
        style: load_prompt(style_prompt_path(settings.prompts_dir, style)).version
        for style in STYLE_KEYS
    }


MIND_PROMPTS = VersionSource(
    "mind_prompts",
    "The MIND prompt file of each style, versioned by content hash. Observing it after editing "
    "a prompt marks only that style's conversations as unsynced.",
    mind_prompt_versions,
    partitions_def=style_partitions,
    group_name="conversations",
)
mind_prompts = version_source_asset(MIND_PROMPTS)


def shard_and_style(context: AssetExecutionContext) -> tuple[str, str]:
    key = context.partition_key
    assert isinstance(key, MultiPartitionKey)
    dims = key.keys_by_dimension
    return dims["shard"], dims["style"]


@asset(
    partitions_def=shard_style_partitions,
    deps=[
        AssetDep(chunks, partition_mapping=MultiToSingleDimensionPartitionMapping("shard")),
        AssetDep(mind_prompts, partition_mapping=MultiToSingleDimensionPartitionMapping("style")),
        llm_config,
    ],
    automation_condition=eager_ignoring(mind_prompts, llm_config),
    check_specs=[
        AssetCheckSpec(
            "every_chunk_has_a_conversation",
            asset="conversations",
            description="One row per chunk that fits the context (skipped chunks are counted).",
        ),
        AssetCheckSpec(
            "lineage_non_null",
            asset="conversations",
            blocking=True,
            description="Every row has all lineage columns filled.",
        ),
    ],
    group_name="conversations",
    kinds={"vllm", "parquet"},
    **generating_asset(),
    # The code's part of the version; prompts and the model are versioned by the sources above.
    code_version="1",
)
def conversations(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    """One MIND conversation per chunk in the partition's style, generated in resumable batches;
    raw text, parsed turns and full lineage per row.
    """
    settings = get_settings()
    shard, style = shard_and_style(context)
    prompt = load_prompt(style_prompt_path(settings.prompts_dir, style))
    chunk_table = CHUNKS.partition(settings.data_dir, {"shard": shard}).read()
    plan = plan_conversations(
        chunk_table,
        prompt,
        style,
        model_name=llm.model_name,
        base_seed=settings.seed,
        max_model_len=llm.max_model_len,
        count_tokens=token_counter(llm.model_path()),
        max_tokens_cap=settings.max_tokens,
    )
    if plan.skipped_too_long:
        context.log.warning(
            "%d chunks skipped: prompt leaves fewer than 64 tokens of context (%s...)",
            len(plan.skipped_too_long),
            ", ".join(plan.skipped_too_long[:5]),
        )
    out = CONVERSATIONS.partition(settings.data_dir, {"shard": shard, "style": style})
    store = RequestStore(requests_dir(settings.data_dir, "conversations", shard, style))
    started = time.monotonic()
    results, stats = generate_resumable(
        [p.request for p in plan.planned],
        llm.chat,
        store,
        batch_size=llm.requests_per_batch(settings.batch_size),
        previous_outputs=[out.path],
        label=f"conversations {shard}/{style}",
        logger=context.log,
    )
    table = conversation_rows(
        plan, results, shard=shard, style=style, prompt=prompt, identity=llm.identity()
    )
    out.write(table)
    store.clear()
    usage = llm.usage([stats])
    store_metrics = metrics_store(settings.data_dir)
    store_metrics.replace_partition("generations", {"shard": shard, "style": style}, table)
    store_metrics.record_aggregates("conversations", f"{shard}|{style}", usage)
    summary = summarize_conversations(
        table,
        chunk_ids=chunk_table.column("chunk_id").to_pylist(),
        plan=plan,
        stats=stats,
        served_by=[r.result.served_by for r in results.values()],
        prompt=prompt,
        model=llm.model_name,
        engine=llm.engine_metadata(),
        servers=llm.server_report(),
        wall_seconds=time.monotonic() - started,
    )
    return output_result(
        table,
        out.path,
        preview=["chunk_id", "n_turns", "finish_reason", "text"],
        summary=summary,
        **usage,
    )
