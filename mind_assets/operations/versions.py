"""Every version source of the platform, derived from the stages, and the conversation
partitions Dagster reports unsynced, which is what the regeneration schedule refreshes."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance

from mind_assets.conversations.assets import conversations
from mind_assets.filtering.assets import filtered_conversations
from mind_assets.lib.stages import discover_stages
from mind_assets.lib.versions import UnsyncedStatus, VersionChange, record_current_versions
from mind_assets.llm.versions import LLM_CONFIG, llm_config
from mind_assets.settings import MindSettings

# The engine's version source, then each stage's (upstream stages first).
VERSION_SOURCES = (
    LLM_CONFIG,
    *(source for stage in discover_stages() for source in stage.version_sources),
)
# Their observable source assets. Observe them before a first run (one run each: their
# partitions differ), or let the regeneration schedule record them.
VERSION_SOURCE_ASSETS = [
    llm_config,
    *(
        asset
        for stage in discover_stages()
        for asset in stage.assets
        if any(asset.key == source.asset_key for source in stage.version_sources)
    ),
]


def record_versions(instance: DagsterInstance, settings: MindSettings) -> list[VersionChange]:
    """Observe every version source without a run; only changed versions are written."""
    return record_current_versions(instance, VERSION_SOURCES, settings)


@dataclass(frozen=True)
class PartitionToRegenerate:
    partition: str  # the conversations / filtered_conversations key, "shard|style"
    assets: tuple[str, ...]  # what to rematerialize: both, or the filter alone
    causes: tuple[str, ...]


@dataclass(frozen=True)
class RegenerationScan:
    found: list[PartitionToRegenerate]
    asked: int  # partitions Dagster was asked about
    last_asked: str | None  # where the next scan goes on (None: nothing is materialized)


def conversation_partitions_to_regenerate(
    status: UnsyncedStatus,
    *,
    budget: int | None = None,
    scan_limit: int | None = None,
    start_after: str | None = None,
) -> RegenerationScan:
    """Materialized `conversations` / `filtered_conversations` partitions Dagster reports
    unsynced: an unsynced conversation is regenerated, then filtered again; an unsynced filtered
    partition whose conversations are in sync is filtered again only.

    Partitions are asked about in key order from the one after `start_after` (wrapping around),
    at most `scan_limit` of them, stopping once `budget` are found: each partition asked costs
    a few event-log queries (benchmarks/RESULTS.md, *scale*), so a tick over tens of thousands
    of partitions must not ask about all of them."""
    generate = conversations.key.to_user_string()
    refilter = filtered_conversations.key.to_user_string()
    generated = set(status.materialized_partitions(generate))
    filtered = set(status.materialized_partitions(refilter))
    ordered = sorted(generated | filtered)
    if start_after is not None:
        later = [p for p in ordered if p > start_after]
        ordered = later + [p for p in ordered if p <= start_after]
    found: list[PartitionToRegenerate] = []
    asked = 0
    last_asked = None
    for partition in ordered:
        if (scan_limit is not None and asked >= scan_limit) or (
            budget is not None and len(found) >= budget
        ):
            break
        asked += 1
        last_asked = partition
        if partition in generated and (item := status.unsynced(generate, partition)):
            found.append(PartitionToRegenerate(partition, (generate, refilter), item.causes))
        elif partition in filtered and (item := status.unsynced(refilter, partition)):
            found.append(PartitionToRegenerate(partition, (refilter,), item.causes))
    return RegenerationScan(found, asked, last_asked)
