"""Versions Dagster understands: what changes a generated asset's output (prompt files, model and
engine configuration, filter thresholds) is an observable source asset whose data version is a
hash of it, and Dagster's own stale-status resolver says which partitions that makes *unsynced*.

Each stage declares its sources as `VersionSource`s; `version_source_asset` turns one into an
observable source asset (observed from the UI or a run), and `record_current_versions` records
the same versions without a run, which is what the regeneration schedule does at every tick.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetKey,
    AssetObservation,
    DagsterInstance,
    DataVersion,
    DataVersionsByPartition,
    PartitionsDefinition,
    SourceAsset,
    observable_source_asset,
)
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

# Dagster keeps no public handle on these: the tag observations carry their data version in, and
# the resolver behind the UI's *unsynced* badge (the GraphQL `staleStatus(partition:)` field).
# `RunRequest(stale_assets_only=True)`, the public route, asks per asset, never per partition.
from dagster._core.definitions.data_version import (
    DATA_VERSION_TAG,
    CachingStaleStatusResolver,
    StaleStatus,
    extract_data_version_from_entry,
)
from dagster._core.loader import LoadingContext

from mind_assets.settings import MindSettings, get_settings

VERSIONS_GROUP = "versions"

# What a source's current versions are: one string for an unpartitioned source, else a version
# per partition key.
CurrentVersions = Callable[[MindSettings, DagsterInstance], "str | Mapping[str, str]"]


def content_version(value: Any) -> str:
    """A short, stable hash of JSON-able configuration (keys sorted, so order never matters)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class VersionSource:
    """One thing that changes generated output, as Dagster will see it: an observable source
    asset named `key`, partitioned like the partitions it versions (or not at all)."""

    key: str
    description: str
    current: CurrentVersions
    partitions_def: PartitionsDefinition | None = None
    group_name: str = VERSIONS_GROUP
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def asset_key(self) -> AssetKey:
        return AssetKey(self.key)

    def versions(self, settings: MindSettings, instance: DagsterInstance) -> dict[str | None, str]:
        found = self.current(settings, instance)
        if isinstance(found, str):
            if self.partitions_def is not None:
                raise TypeError(f"{self.key} is partitioned: its versions need a partition each")
            return {None: found}
        if self.partitions_def is None:
            raise TypeError(f"{self.key} is not partitioned: its version is one string")
        return dict(found)


def version_source_asset(source: VersionSource) -> SourceAsset:
    """The observable source asset of `source`: observing it records its current versions."""

    @observable_source_asset(
        name=source.key,
        partitions_def=source.partitions_def,
        group_name=source.group_name,
        description=source.description,
        tags=dict(source.tags) or None,
    )
    def _observe(context) -> DataVersion | DataVersionsByPartition:
        versions = source.versions(get_settings(), context.instance)
        if source.partitions_def is None:
            return DataVersion(versions[None])
        return DataVersionsByPartition({k: DataVersion(v) for k, v in versions.items()})

    return _observe


@dataclass(frozen=True)
class VersionChange:
    key: str
    partition: str | None
    previous: str | None
    current: str


def latest_observed_version(
    instance: DagsterInstance, key: AssetKey, partition: str | None
) -> str | None:
    record = instance.get_latest_data_version_record(key, True, partition)
    version = extract_data_version_from_entry(record.event_log_entry) if record else None
    return version.value if version else None


def record_current_versions(
    instance: DagsterInstance, sources: Iterable[VersionSource], settings: MindSettings
) -> list[VersionChange]:
    """Record, as runless observations, every source version that differs from the last one
    observed, so that Dagster's unsynced status reflects the files and settings as they are now.
    Unchanged versions write nothing."""
    changes = []
    for source in sources:
        for partition, version in source.versions(settings, instance).items():
            previous = latest_observed_version(instance, source.asset_key, partition)
            if previous == version:
                continue
            instance.report_runless_asset_event(
                AssetObservation(
                    asset_key=source.asset_key,
                    partition=partition,
                    tags={DATA_VERSION_TAG: version},
                )
            )
            changes.append(VersionChange(source.key, partition, previous, version))
    return changes


class _StatusLoading(LoadingContext):
    """The request scope the stale-status resolver batches its queries in."""

    def __init__(self, instance: DagsterInstance):
        self._instance = instance
        self._loaders: dict = {}

    @property
    def instance(self) -> DagsterInstance:
        return self._instance

    @property
    def loaders(self) -> dict:
        return self._loaders


@dataclass(frozen=True)
class UnsyncedPartition:
    asset: str
    partition: str
    causes: tuple[str, ...]  # e.g. "mind_prompts[debate] has a new data version"


class UnsyncedStatus:
    """Dagster's stale status of materialized partitions (MISSING ones are not unsynced), asked
    through one resolver so repeated questions share its cached queries."""

    def __init__(self, instance: DagsterInstance, asset_graph: BaseAssetGraph):
        self.instance = instance
        self.resolver = CachingStaleStatusResolver(instance, asset_graph, _StatusLoading(instance))

    def materialized_partitions(self, key: str) -> list[str]:
        return sorted(self.instance.get_materialized_partitions(AssetKey(key)))

    def unsynced(self, key: str, partition: str | None = None) -> UnsyncedPartition | None:
        asset_key = AssetKey(key)
        if self.resolver.get_status(asset_key, partition) != StaleStatus.STALE:
            return None
        causes = tuple(
            _describe(c.key.asset_key, c.key.partition_key, c.reason)
            for c in self.resolver.get_stale_root_causes(asset_key, partition)
        )
        return UnsyncedPartition(key, partition or "", causes)

    def unsynced_partitions(
        self, key: str, partitions: Sequence[str] | None = None
    ) -> list[UnsyncedPartition]:
        """The unsynced partitions of `key` among `partitions` (default: every materialized
        one), in partition-key order."""
        if partitions is None:
            partitions = self.materialized_partitions(key)
        found = []
        for partition in partitions:
            if (item := self.unsynced(key, partition)) is not None:
                found.append(item)
        return found


def _describe(key: AssetKey, partition: str | None, reason: str) -> str:
    where = f"{key.to_user_string()}[{partition}]" if partition else key.to_user_string()
    return f"{where} {reason}"
