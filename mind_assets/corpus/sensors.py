"""`corpus_inbox_sensor`: registers new inbox files as shards and requests their raw documents."""

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from mind_assets.corpus.assets import raw_documents
from mind_assets.corpus.inbox import InboxFile
from mind_assets.corpus.inbox_ledger import inbox_tick
from mind_assets.corpus.shards import ShardSpec
from mind_assets.settings import get_settings

# Run tag of every inbox run, valued with the file's name. dagster.yaml and deploy/dagster.yaml
# cap runs carrying it (`concurrency.runs.tag_concurrency_limits`), so a flood of thousands of
# files waits in the run queue instead of taking every run slot.
INBOX_RUN_TAG = "mind/inbox"


def inbox_run_request(file: InboxFile, spec: ShardSpec) -> RunRequest:
    # The run key names the file version: a request repeated after a failed tick is dropped by
    # Dagster, while a rewritten file (new size or mtime) gets a run of its own.
    return RunRequest(
        run_key=f"inbox:{file.key}",
        partition_key=spec.name,
        asset_selection=[raw_documents.key],
        tags={INBOX_RUN_TAG: file.name},
    )


@sensor(
    asset_selection=[raw_documents],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.STOPPED,
    description="Watches MIND_INBOX_DIR: each new .jsonl/.parquet file (or .hf.json manifest of "
    "hub rows) becomes a shard, and its raw_documents run is requested, at most "
    "MIND_INBOX_MAX_FILES_PER_TICK files per tick. Corrupt or vanished files are logged and "
    "skipped.",
)
def corpus_inbox_sensor(context: SensorEvaluationContext) -> SensorResult:
    settings = get_settings()
    limit = settings.inbox_max_files_per_tick
    tick = inbox_tick(context.instance, settings, context.cursor, limit)
    for message in tick.warnings:
        context.log.warning("corpus inbox: %s", message)
    for message in tick.notes:
        context.log.info("corpus inbox: %s", message)
    for decision in tick.skipped:
        context.log.warning("corpus inbox: skipped: %s", decision.problem)
    if tick.registered:
        shown = ", ".join(f"{f.name} -> {s.name}" for f, s in tick.registered[:5])
        more = len(tick.registered) - 5
        context.log.info(
            "corpus inbox: %d file(s) registered as shards (%d new partitions): %s%s",
            len(tick.registered),
            len(tick.added_partitions),
            shown,
            f" and {more} more" if more > 0 else "",
        )
    if tick.remaining:
        context.log.info(
            "corpus inbox: %d new file(s) remain for the next ticks "
            "(MIND_INBOX_MAX_FILES_PER_TICK=%d)",
            tick.remaining,
            limit,
        )
    run_requests = [inbox_run_request(file, spec) for file, spec in tick.registered]
    if not run_requests:
        reason = f"no new files in {settings.inbox}"
        if tick.skipped or tick.remaining:
            reason = (
                f"{len(tick.skipped)} unusable file(s) skipped; "
                f"{tick.remaining} new file(s) remain in {settings.inbox}"
            )
        return SensorResult(skip_reason=SkipReason(reason), cursor=tick.cursor)
    return SensorResult(run_requests=run_requests, cursor=tick.cursor)
