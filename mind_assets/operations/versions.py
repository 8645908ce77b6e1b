"""Every version source of the platform in one list, and the conversation partitions Dagster
reports unsynced, which is what the regeneration schedule refreshes."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance

from mind_assets.conversations.assets import MIND_PROMPTS, conversations, mind_prompts
from mind_assets.filtering.assets import FILTER_CONFIG, filter_config, filtered_conversations
from mind_assets.lib.versions import UnsyncedStatus, VersionChange, record_current_versions
from mind_assets.llm.versions import LLM_CONFIG, llm_config
from mind_assets.math_traces.assets import MATH_CONFIG, MATH_PROMPTS, math_config, math_prompts
from mind_assets.settings import MindSettings
from mind_assets.task_qa.assets import (
    TASK_QA_CONFIG,
    TASK_QA_PROMPTS,
    task_qa_config,
    task_qa_prompts,
)

VERSION_SOURCES = (
    MIND_PROMPTS,
    TASK_QA_PROMPTS,
    TASK_QA_CONFIG,
    MATH_PROMPTS,
    MATH_CONFIG,
    LLM_CONFIG,
    FILTER_CONFIG,
)
# Their observable source assets, in the same order. Observe them before a first run (one run
# each: their partitions differ), or let the regeneration schedule record them.
VERSION_SOURCE_ASSETS = [
    mind_prompts,
    task_qa_prompts,
    task_qa_config,
    math_prompts,
    math_config,
    llm_config,
    filter_config,
]


def record_versions(instance: DagsterInstance, settings: MindSettings) -> list[VersionChange]:
    """Observe every version source without a run; only changed versions are written."""
    return record_current_versions(instance, VERSION_SOURCES, settings)


@dataclass(frozen=True)
class PartitionToRegenerate:
    partition: str  # the conversations / filtered_conversations key, "shard|style"
    assets: tuple[str, ...]  # what to rematerialize: both, or the filter alone
    causes: tuple[str, ...]


def conversation_partitions_to_regenerate(status: UnsyncedStatus) -> list[PartitionToRegenerate]:
    """Unsynced `conversations` partitions (regenerated, then filtered again), then unsynced
    `filtered_conversations` partitions whose conversations are in sync (filtered again only),
    in partition-key order."""
    generate = conversations.key.to_user_string()
    refilter = filtered_conversations.key.to_user_string()
    found: dict[str, PartitionToRegenerate] = {}
    for item in status.unsynced_partitions(generate):
        found[item.partition] = PartitionToRegenerate(
            item.partition, (generate, refilter), item.causes
        )
    for item in status.unsynced_partitions(refilter):
        if item.partition not in found:
            found[item.partition] = PartitionToRegenerate(item.partition, (refilter,), item.causes)
    return [found[key] for key in sorted(found)]
