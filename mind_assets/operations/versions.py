"""Every version source of the platform, derived from the stages: what the regeneration
schedules observe at each tick."""

from __future__ import annotations

from dagster import DagsterInstance

from mind_assets.lib.stages import discover_stages
from mind_assets.lib.versions import VersionChange, record_current_versions
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
