"""Scheduled regeneration across stages: a budgeted refresh of the conversation partitions
Dagster reports unsynced after a prompt, model or filter-threshold change. (A stage's own
schedules, such as the nightly blend rebuild, are in its package.)"""

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from mind_assets.conversations.assets import conversations, shard_style_partitions
from mind_assets.filtering.assets import filtered_conversations
from mind_assets.lib.versions import UnsyncedStatus
from mind_assets.operations.versions import conversation_partitions_to_regenerate, record_versions
from mind_assets.settings import get_settings

# Where the regeneration schedule's scan stopped (the last partition it asked about), kept in
# the instance's cursor storage so the next tick goes on from there.
REGENERATION_CURSOR = "mind_assets/regenerate_unsynced_conversations/last_asked"


@schedule(
    cron_schedule="0 * * * *",
    target=[conversations, filtered_conversations],
    default_status=DefaultScheduleStatus.STOPPED,
    description="Hourly: observe every version source (prompts, model, filter thresholds), then "
    "rematerialize the conversations partitions Dagster reports unsynced (regenerated and "
    "filtered again) and the unsynced filtered_conversations partitions (filtered again), at "
    "most MIND_CONVERSATIONS__REGENERATION_BUDGET partitions per tick; each tick asks about at "
    "most MIND_CONVERSATIONS__REGENERATION_SCAN_LIMIT partitions, going on where the last one "
    "stopped.",
)
def regenerate_unsynced_conversations(context: ScheduleEvaluationContext):
    settings = get_settings()
    for change in record_versions(context.instance, settings):
        context.log.info(
            "observed %s%s: %s -> %s",
            change.key,
            f"[{change.partition}]" if change.partition else "",
            change.previous,
            change.current,
        )
    # Dagster's code server evaluates schedules with their repository, and so its assets.
    status = UnsyncedStatus.of_repository(context.instance, context.repository_def)
    cursors = context.instance.daemon_cursor_storage
    start_after = cursors.get_cursor_values({REGENERATION_CURSOR}).get(REGENERATION_CURSOR)
    scan = conversation_partitions_to_regenerate(
        status,
        budget=settings.conversations.regeneration_budget,
        scan_limit=settings.conversations.regeneration_scan_limit,
        start_after=start_after,
    )
    if scan.last_asked is not None:
        cursors.set_cursor_values({REGENERATION_CURSOR: scan.last_asked})
    context.log.info(
        "asked Dagster about %d partitions after %s; %d unsynced",
        scan.asked,
        start_after or "the first",
        len(scan.found),
    )
    if not scan.found:
        return SkipReason(
            f"Dagster reports no unsynced conversations partition among the {scan.asked} asked"
        )
    picked = scan.found
    for item in picked:
        context.log.info("regenerating %s %s: %s", item.partition, item.assets, item.causes)
    return [
        RunRequest(
            # One request per partition and tick: a partition still unsynced when the scan comes
            # round to it again (its run failed) is asked for again.
            run_key=f"regenerate:{item.partition}:{'+'.join(item.assets)}:"
            f"{context.scheduled_execution_time:%Y%m%dT%H%M}",
            partition_key=shard_style_partitions.get_partition_key_from_str(item.partition),
            asset_selection=[AssetKey(a) for a in item.assets],
        )
        for item in picked
    ]
