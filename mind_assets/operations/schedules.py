"""Scheduled regeneration: nightly blend rebuilds, and a budgeted refresh of conversation
partitions made stale by a prompt or model change."""

from dagster import (
    DefaultScheduleStatus,
    MultiPartitionKey,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from mind_assets.blends.assets import blend_manifest, blend_partitions
from mind_assets.conversations.assets import conversations
from mind_assets.conversations.regeneration import unsynced_conversation_partitions
from mind_assets.filtering.assets import filtered_conversations
from mind_assets.lib.instance import SHARDS_PARTITION
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import get_settings


@schedule(
    cron_schedule="0 3 * * *",
    target=[blend_manifest],
    default_status=DefaultScheduleStatus.STOPPED,
    description="Rebuild every blend manifest nightly (03:00) from the latest materializations.",
)
def nightly_blend_rebuild(context: ScheduleEvaluationContext):
    return [
        RunRequest(
            run_key=f"blend:{key}:{context.scheduled_execution_time:%Y%m%d}", partition_key=key
        )
        for key in blend_partitions.get_partition_keys()
    ]


@schedule(
    cron_schedule="0 * * * *",
    target=[conversations, filtered_conversations],
    default_status=DefaultScheduleStatus.STOPPED,
    description="Hourly: regenerate conversation partitions whose prompt version or model differs "
    "from the current one, at most MIND_CONVERSATIONS__REGENERATION_BUDGET partitions per tick.",
)
def regenerate_unsynced_conversations(context: ScheduleEvaluationContext):
    settings = get_settings()
    model_name = LLMResource.from_settings(settings).model_name
    shards = context.instance.get_dynamic_partitions(SHARDS_PARTITION)
    stale = unsynced_conversation_partitions(
        settings.data_dir, settings.prompts_dir, model_name, shards
    )
    if not stale:
        return SkipReason("every materialized conversation partition matches its prompt and model")
    picked = stale[: settings.conversations.regeneration_budget]
    for item in picked:
        context.log.info("regenerating %s|%s: %s", item.shard, item.style, item.reason)
    return [
        RunRequest(partition_key=MultiPartitionKey({"shard": item.shard, "style": item.style}))
        for item in picked
    ]
