"""Versions Dagster understands: what changes a generated asset's output (prompt files, model and
engine configuration, filter thresholds) is an observable source asset whose data version is a
hash of it, and `UnsyncedStatus` says which materialized partitions that makes *unsynced*.

Each stage declares its sources as `VersionSource`s; `version_source_asset` turns one into an
observable source asset (observed from the UI or a run), and `record_current_versions` records
the same versions without a run, which is what the regeneration schedule does at every tick.
`UnsyncedStatus` reads only the provenance Dagster records on asset events, through the
instance's public record queries, and applies the rules of the UI's *unsynced* badge to it
(mind_assets_tests/test_dagster_contract.py holds the two answers equal).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    AutomationCondition,
    DagsterInstance,
    DataVersion,
    DataVersionsByPartition,
    EventLogRecord,
    IdentityPartitionMapping,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    PartitionMapping,
    PartitionsDefinition,
    RepositoryDefinition,
    SourceAsset,
    StaticPartitionMapping,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
    observable_source_asset,
)

from mind_assets.settings import MindSettings, get_settings

# The tags Dagster writes a data version and its provenance into. No public constant names them;
# mind_assets_tests/test_dagster_contract.py checks each against what a real run records.
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
USER_PROVIDED_TAG = "dagster/data_version_is_user_provided"
INPUT_DATA_VERSION_PREFIX = "dagster/input_data_version/"  # + the dependency's key
INPUT_EVENT_POINTER_PREFIX = "dagster/input_event_pointer/"  # + the dependency's key
# Recorded as a dependency's version when it had none (a source never observed), and the
# pointer recorded when the dependency had no event at all.
INITIAL_VERSION = "INITIAL"
NO_EVENT_POINTER = "NULL"

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


def eager_ignoring(*sources: SourceAsset) -> AutomationCondition:
    """Materialize a partition when new upstream data arrives, but not when one of these version
    sources changes: prompt, model and threshold edits are left to the budgeted regeneration
    schedule, and a version never observed does not block a new partition."""
    return AutomationCondition.eager().ignore(AssetSelection.assets(*(s.key for s in sources)))


@dataclass(frozen=True)
class VersionChange:
    key: str
    partition: str | None
    previous: str | None
    current: str


def _records_filter(
    key: AssetKey, partition: str | None, before: int | None = None
) -> AssetRecordsFilter:
    return AssetRecordsFilter(
        asset_key=key,
        asset_partitions=[partition] if partition is not None else None,
        before_storage_id=before,
    )


def _tags(record: EventLogRecord) -> Mapping[str, str]:
    event = record.asset_materialization or record.asset_observation
    return (event.tags if event else None) or {}


def _version(record: EventLogRecord | None) -> str | None:
    return _tags(record).get(DATA_VERSION_TAG) if record else None


def latest_observed_version(
    instance: DagsterInstance, key: AssetKey, partition: str | None
) -> str | None:
    records = instance.fetch_observations(_records_filter(key, partition), limit=1).records
    return _version(records[0]) if records else None


def record_current_versions(
    instance: DagsterInstance, sources: Iterable[VersionSource], settings: MindSettings
) -> list[VersionChange]:
    """Record, as runless observations, every source version that differs from the last one
    observed, so that the unsynced status reflects the files and settings as they are now.
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


@dataclass(frozen=True)
class UnsyncedPartition:
    asset: str
    partition: str
    causes: tuple[str, ...]  # e.g. "mind_prompts[debate] has a new data version"


# Like Dagster, a dependency on this many partitions or more is not compared partition by
# partition (its runs record no per-partition provenance for it either): it is left out.
MAX_DEPENDENCY_PARTITIONS = 100


@dataclass(frozen=True)
class _Asset:
    """What the unsynced rules need to know of one asset."""

    key: AssetKey
    partitions_def: PartitionsDefinition | None
    code_version: str | None = None
    deps: Mapping[AssetKey, PartitionMapping | None] = field(default_factory=dict)
    source: bool = False  # observed or reported, never materialized by a step: never unsynced
    observable: bool = False


def _assets_by_key(
    assets: Iterable[AssetsDefinition | SourceAsset | AssetSpec],
) -> dict[AssetKey, _Asset]:
    found: dict[AssetKey, _Asset] = {}
    for item in assets:
        if isinstance(item, SourceAsset):
            found[item.key] = _Asset(
                item.key, item.partitions_def, source=True, observable=item.is_observable
            )
        elif isinstance(item, AssetSpec):  # Definitions takes a bare spec as an external asset
            found[item.key] = _Asset(item.key, item.partitions_def, source=True)
        else:
            for key in item.keys:
                spec = item.get_asset_spec(key)
                deps = {
                    dep.asset_key: dep.partition_mapping
                    or item.get_partition_mapping(dep.asset_key)
                    for dep in spec.deps
                }
                found[key] = _Asset(key, spec.partitions_def, spec.code_version, deps)
    return found


def _matching_dimension(multi: MultiPartitionsDefinition, single: PartitionsDefinition) -> str:
    matches = [dim.name for dim in multi.partitions_defs if dim.partitions_def == single]
    if len(matches) != 1:
        raise ValueError(f"no single dimension of {multi} is partitioned like {single}")
    return matches[0]


def _default_mapping(
    downstream: PartitionsDefinition, upstream: PartitionsDefinition
) -> PartitionMapping:
    """The mapping Dagster assumes when a dependency declares none (both partitioned)."""
    multi = [d for d in (downstream, upstream) if isinstance(d, MultiPartitionsDefinition)]
    if len(multi) == 1:
        single = upstream if multi[0] is downstream else downstream
        if sum(dim.partitions_def == single for dim in multi[0].partitions_defs) == 1:
            return MultiToSingleDimensionPartitionMapping()
    if isinstance(downstream, TimeWindowPartitionsDefinition) and isinstance(
        upstream, TimeWindowPartitionsDefinition
    ):
        return TimeWindowPartitionMapping()
    return IdentityPartitionMapping()


def _changed(recorded: str | None, current: str | None) -> bool:
    # A dependency recorded as INITIAL (nothing yet) that still has no event has not changed.
    return recorded != current and not (recorded == INITIAL_VERSION and current is None)


def _describe(key: AssetKey, partition: str | None, reason: str) -> str:
    where = f"{key.to_user_string()}[{partition}]" if partition else key.to_user_string()
    return f"{where} {reason}"


class UnsyncedStatus:
    """Which materialized partitions are unsynced, by the rules of the Dagster UI's badge, read
    from the provenance Dagster records on each materialization. A partition is unsynced when

    - its asset's code version is not the one recorded on its materialization, or
    - a dependency partition has a new data version since: for an unpartitioned dependency, its
      current version is not the recorded input version; for a partitioned one, its latest event
      after the recorded event pointer carries another version than the last one before it, or
    - the dependencies differ from those recorded (added or removed).

    A materialization without provenance (reported without a run) is unsynced when a
    materializable dependency has no materialization or a newer one. A missing partition is not
    unsynced, and neither is a partition of a source. Queries are cached for the object's life:
    build one per question, or per schedule tick.
    """

    def __init__(
        self,
        instance: DagsterInstance,
        assets: Iterable[AssetsDefinition | SourceAsset | AssetSpec],
    ):
        self.instance = instance
        self._assets = _assets_by_key(assets)
        self._records: dict[tuple, EventLogRecord | None] = {}
        self._keys: dict[int, frozenset[str]] = {}

    @classmethod
    def of_repository(
        cls, instance: DagsterInstance, repository: RepositoryDefinition
    ) -> UnsyncedStatus:
        """Over every asset of a repository (a schedule's `context.repository_def`)."""
        assets = {id(a): a for a in repository.assets_defs_by_key.values()}
        return cls(instance, [*assets.values(), *repository.source_assets_by_key.values()])

    def materialized_partitions(self, key: str) -> list[str]:
        return sorted(self.instance.get_materialized_partitions(AssetKey(key)))

    def unsynced(self, key: str, partition: str | None = None) -> UnsyncedPartition | None:
        causes = self._causes(AssetKey(key), partition)
        return UnsyncedPartition(key, partition or "", tuple(causes)) if causes else None

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

    def dependency_partitions(
        self, key: AssetKey, partition: str | None
    ) -> list[tuple[AssetKey, str | None]]:
        """The dependency partitions a partition's staleness is judged on (None: unpartitioned)."""
        asset = self._asset(key)
        found: list[tuple[AssetKey, str | None]] = []
        for dep_key, mapping in asset.deps.items():
            dep = self._asset(dep_key)
            if dep.partitions_def is None:
                found.append((dep_key, None))
                continue
            keys = self._mapped_partitions(asset, dep, mapping, partition)
            if len(keys) < MAX_DEPENDENCY_PARTITIONS:
                found.extend((dep_key, k) for k in keys)
        return found

    def _asset(self, key: AssetKey) -> _Asset:
        # A key that is depended on but not defined is an external asset to Dagster.
        return self._assets.get(key) or _Asset(key, None, source=True)

    def _partition_keys(self, partitions_def: PartitionsDefinition) -> frozenset[str]:
        if id(partitions_def) not in self._keys:
            self._keys[id(partitions_def)] = frozenset(
                partitions_def.get_partition_keys(dynamic_partitions_store=self.instance)
            )
        return self._keys[id(partitions_def)]

    def _exists(self, partitions_def: PartitionsDefinition, partition: str) -> bool:
        if isinstance(partitions_def, MultiPartitionsDefinition):
            parts = partitions_def.get_partition_key_from_str(partition).keys_by_dimension
            return all(
                parts[dim.name] in self._partition_keys(dim.partitions_def)
                for dim in partitions_def.partitions_defs
            )
        return partition in self._partition_keys(partitions_def)

    def _mapped_partitions(
        self, asset: _Asset, dep: _Asset, mapping: PartitionMapping | None, partition: str | None
    ) -> list[str]:
        down, up = asset.partitions_def, dep.partitions_def
        assert up is not None
        if mapping is None:
            mapping = AllPartitionMapping() if down is None else _default_mapping(down, up)
        if isinstance(mapping, AllPartitionMapping):
            return sorted(self._partition_keys(up))
        if partition is None:
            return []
        if isinstance(mapping, IdentityPartitionMapping):
            candidates = [partition]
        elif isinstance(mapping, StaticPartitionMapping):
            candidates = [
                upstream
                for upstream, downstream in (
                    mapping.downstream_partition_keys_by_upstream_partition_key.items()
                )
                if partition == downstream
                or (not isinstance(downstream, str) and partition in downstream)
            ]
        elif isinstance(mapping, MultiToSingleDimensionPartitionMapping) and isinstance(
            down, MultiPartitionsDefinition
        ):
            dim = mapping.partition_dimension_name or _matching_dimension(down, up)
            candidates = [down.get_partition_key_from_str(partition).keys_by_dimension[dim]]
        elif isinstance(mapping, MultiToSingleDimensionPartitionMapping) and isinstance(
            up, MultiPartitionsDefinition
        ):
            dim = mapping.partition_dimension_name or _matching_dimension(up, down)
            return sorted(
                k
                for k in self._partition_keys(up)
                if up.get_partition_key_from_str(k).keys_by_dimension[dim] == partition
            )
        else:
            raise NotImplementedError(
                f"{asset.key.to_user_string()} depends on {dep.key.to_user_string()} through "
                f"{type(mapping).__name__}, which mind_assets/lib/versions.py does not map yet"
            )
        return [k for k in candidates if self._exists(up, k)]

    def _latest(
        self, key: AssetKey, partition: str | None, kind: str, before: int | None = None
    ) -> EventLogRecord | None:
        """The latest `kind` event ("materialization" or "observation") of a partition, before
        a storage id if given."""
        cache_key = (key, partition, kind, before)
        if cache_key not in self._records:
            fetch = (
                self.instance.fetch_observations
                if kind == "observation"
                else self.instance.fetch_materializations
            )
            records = fetch(_records_filter(key, partition, before), limit=1).records
            self._records[cache_key] = records[0] if records else None
        return self._records[cache_key]

    def _current(self, key: AssetKey, partition: str | None) -> EventLogRecord | None:
        """The event a partition's current data version comes from: its latest materialization,
        or for an observable source the newer of that and its latest observation."""
        found = [self._latest(key, partition, "materialization")]
        if self._asset(key).observable:
            found.append(self._latest(key, partition, "observation"))
        return max((r for r in found if r), key=lambda r: r.storage_id, default=None)

    def _current_version(self, key: AssetKey, partition: str | None) -> str | None:
        record = self._current(key, partition)
        if record is None:
            return INITIAL_VERSION if self._asset(key).source else None
        return _version(record) or INITIAL_VERSION

    def _dependency_changed(
        self, tags: Mapping[str, str], dep_key: AssetKey, partition: str | None
    ) -> bool:
        name = dep_key.to_user_string()
        if partition is None:
            return _changed(
                tags[INPUT_DATA_VERSION_PREFIX + name], self._current_version(dep_key, None)
            )
        # A partitioned dependency is compared at its own events: the version it had when the
        # materialization read the dependency (up to the recorded pointer) and its latest since.
        pointer = tags[INPUT_EVENT_POINTER_PREFIX + name]
        if pointer == NO_EVENT_POINTER:
            return False  # nothing to compare with: Dagster compares the latest event with itself
        kind = "observation" if self._asset(dep_key).source else "materialization"
        latest = self._latest(dep_key, partition, kind)
        if latest is None or latest.storage_id <= int(pointer):
            return False
        then = self._latest(dep_key, partition, kind, before=int(pointer) + 1)
        return _changed(_version(then), _version(latest))

    def _reports_data_version(self, key: AssetKey, partition: str | None) -> bool:
        """Whether a dependency's versions mean something (Dagster says "new data version") or
        change at every materialization ("new materialization")."""
        dep = self._asset(key)
        if dep.source or dep.code_version is not None:
            return True
        record = self._current(key, partition)
        tags = _tags(record) if record else {}
        return CODE_VERSION_TAG in tags and tags.get(USER_PROVIDED_TAG) == "true"

    def _causes(self, key: AssetKey, partition: str | None) -> list[str]:
        asset = self._asset(key)
        if asset.source or (asset.partitions_def is not None and partition is None):
            return []
        record = self._latest(key, partition, "materialization")
        if record is None:
            return []  # missing, not unsynced
        tags = _tags(record)
        provenance = CODE_VERSION_TAG in tags
        # Causes at this partition, then causes at a dependency partition; each sorted by the
        # dependency, as the UI lists them.
        here: list[tuple[tuple, str]] = []
        upstream: list[tuple[tuple, str]] = []
        if provenance:
            if asset.code_version and asset.code_version != tags[CODE_VERSION_TAG]:
                here.append(((), "has a new code version"))
            recorded = {
                AssetKey.from_user_string(tag[len(INPUT_DATA_VERSION_PREFIX) :])
                for tag in tags
                if tag.startswith(INPUT_DATA_VERSION_PREFIX)
            }
            for removed in recorded - set(asset.deps):
                here.append(
                    ((removed.path, ""), f"removed dependency on {removed.to_user_string()}")
                )
        for dep_key, dep_partition in self.dependency_partitions(key, partition):
            order = (dep_key.path, dep_partition or "")
            name = dep_key.to_user_string()
            if provenance:
                if not {INPUT_DATA_VERSION_PREFIX + name, INPUT_EVENT_POINTER_PREFIX + name} <= set(
                    tags
                ):
                    here.append((order, f"has a new dependency on {name}"))
                elif self._dependency_changed(tags, dep_key, dep_partition):
                    reason = (
                        "has a new data version"
                        if self._reports_data_version(dep_key, dep_partition)
                        else "has a new materialization"
                    )
                    upstream.append((order, _describe(dep_key, dep_partition, reason)))
            elif not self._asset(dep_key).source:
                latest = self._latest(dep_key, dep_partition, "materialization")
                if latest is None:
                    here.append((order, "has a new input"))
                elif latest.timestamp > record.timestamp:
                    cause = _describe(dep_key, dep_partition, "has a new materialization")
                    upstream.append((order, cause))
        causes = [_describe(key, partition, reason) for _, reason in sorted(here)]
        for _, cause in sorted(upstream):
            if cause not in causes:
                causes.append(cause)
        return causes
