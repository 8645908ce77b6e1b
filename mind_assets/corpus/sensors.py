"""`corpus_inbox_sensor`: registers new inbox files as shards and requests their raw documents."""

import json

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from mind_assets.corpus.assets import raw_documents
from mind_assets.corpus.inbox import inspect_file, scan_inbox
from mind_assets.corpus.shards import save_shard_spec
from mind_assets.lib.instance import SHARDS_PARTITION
from mind_assets.settings import get_settings


@sensor(
    asset_selection=[raw_documents],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.STOPPED,
    description="Watches MIND_INBOX_DIR: each new .jsonl/.parquet file (or .hf.json manifest of "
    "hub rows) becomes a shard, and its raw_documents run is requested. Corrupt or vanished "
    "files are logged and skipped.",
)
def corpus_inbox_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    settings = get_settings()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    new_shards, run_requests = [], []
    for file in scan_inbox(settings.inbox):
        if seen.get(file.path.name) == file.key:
            continue
        decision = inspect_file(file)
        seen[file.path.name] = file.key  # a fixed (rewritten) file has a new key and is retried
        if decision.spec is None:
            context.log.warning("corpus inbox: skipped: %s", decision.problem)
            continue
        spec = decision.spec
        save_shard_spec(settings.shard_specs_dir, spec)
        if not context.instance.has_dynamic_partition(SHARDS_PARTITION, spec.name):
            new_shards.append(spec.name)
        run_requests.append(
            RunRequest(
                run_key=f"inbox:{file.key}",
                partition_key=spec.name,
                asset_selection=[raw_documents.key],
            )
        )
        context.log.info("corpus inbox: %s -> shard %r", file.path.name, spec.name)
    cursor = json.dumps(seen, sort_keys=True)
    if not run_requests:
        return SensorResult(
            skip_reason=SkipReason(f"no new files in {settings.inbox}"), cursor=cursor
        )
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(SHARDS_PARTITION, new_shards)]
        if new_shards
        else [],
        cursor=cursor,
    )
