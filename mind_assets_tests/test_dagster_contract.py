"""What mind_assets relies on from Dagster beyond its `@public` methods, exercised against a real
instance so that an upgrade that moves any of it fails here, naming it; and the unsynced verdict
of mind_assets/lib/versions.py held equal to Dagster's own.

Dagster's own verdict comes from the resolver behind the UI's *unsynced* badge (the GraphQL
`staleStatus` / `staleCauses` fields), which is private: it is imported here, in a test, and
nowhere in mind_assets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dagster
import pytest
from dagster import (
    AssetDep,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetRecordsFilter,
    AssetsDefinition,
    DataVersion,
    DataVersionsByPartition,
    Definitions,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    SourceAsset,
    StaticPartitionMapping,
    StaticPartitionsDefinition,
    asset,
    build_schedule_context,
    materialize,
    observable_source_asset,
)

from mind_assets.definitions import defs as GRAPH_DEFS
from mind_assets.lib import versions
from mind_assets.lib.instance import SHARDS_PARTITION
from mind_assets.lib.versions import UnsyncedStatus, latest_observed_version
from mind_assets.operations.versions import record_versions
from mind_assets.settings import get_settings
from mind_assets.task_qa.outputs import TASK_FAMILIES_PARTITION


@contextmanager
def relied_on(api: str, by: str) -> Iterator[None]:
    """Fail with the API's name, whatever broke in it."""
    try:
        yield
    except (AttributeError, TypeError, KeyError, ValueError, AssertionError) as error:
        pytest.fail(
            f"Dagster {dagster.__version__} changed {api}, which {by} relies on: "
            f"{type(error).__name__}: {error}",
            pytrace=False,
        )


class DagsterVerdict:
    """The UI's verdict: Dagster's stale-status resolver over `defs`, with root causes
    described as UnsyncedStatus describes them."""

    def __init__(self, instance, defs: Definitions):
        from dagster._core.definitions.data_version import CachingStaleStatusResolver
        from dagster._core.loader import LoadingContext

        class Loading(LoadingContext):
            def __init__(self) -> None:
                self._loaders: dict = {}

            @property
            def instance(self):
                return instance

            @property
            def loaders(self) -> dict:
                return self._loaders

        graph = defs.resolve_asset_graph()
        self.resolver = CachingStaleStatusResolver(instance, graph, Loading())

    def unsynced(self, key: str, partition: str | None) -> tuple[str, ...] | None:
        from dagster._core.definitions.data_version import StaleStatus

        if self.resolver.get_status(AssetKey(key), partition) != StaleStatus.STALE:
            return None
        return tuple(
            versions._describe(c.key.asset_key, c.key.partition_key, c.reason)
            for c in self.resolver.get_stale_root_causes(AssetKey(key), partition)
        )


def every_partition(instance, assets: Sequence) -> Iterator[tuple[str, str | None]]:
    for item in assets:
        for key in [item.key] if isinstance(item, SourceAsset) else item.keys:
            partitions_def = item.partitions_def
            partitions = (
                partitions_def.get_partition_keys(dynamic_partitions_store=instance)
                if partitions_def
                else [None]
            )
            for partition in partitions:
                yield key.to_user_string(), partition


def verdicts(instance, assets: Sequence) -> tuple[dict, dict]:
    """Every partition's unsynced causes (materialized and unsynced ones only), ours and
    Dagster's."""
    ours, theirs = {}, {}
    status = UnsyncedStatus(instance, assets)
    dagster_status = DagsterVerdict(instance, Definitions(assets=assets))
    for key, partition in every_partition(instance, assets):
        if (item := status.unsynced(key, partition)) is not None:
            ours[(key, partition)] = item.causes
        if (causes := dagster_status.unsynced(key, partition)) is not None:
            theirs[(key, partition)] = causes
    return ours, theirs


# A small graph with every kind of edge the platform has: a partitioned and an unpartitioned
# observable source, a multi-partitioned asset on single-dimension ones (mappings explicit and
# inferred), identity, all-partitions and multi-to-single edges, an asset without a code version.
STYLES = StaticPartitionsDefinition(["a", "b"])
SHARDS = DynamicPartitionsDefinition(name="contract_shards")
SHARD_STYLE = MultiPartitionsDefinition({"shard": SHARDS, "style": STYLES})
CURRENT: dict[str, str] = {}  # what the sources and `docs` report, set by the test


@observable_source_asset(partitions_def=STYLES)
def prompts() -> DataVersionsByPartition:
    return DataVersionsByPartition({s: CURRENT[f"prompts[{s}]"] for s in ("a", "b")})


@observable_source_asset
def model() -> DataVersion:
    return DataVersion(CURRENT["model"])


@asset(partitions_def=SHARDS, code_version="1")
def docs(context) -> MaterializeResult:
    return MaterializeResult(data_version=DataVersion(CURRENT[f"docs[{context.partition_key}]"]))


@asset(partitions_def=SHARDS, deps=[docs])
def notes() -> None:
    """No code version: Dagster versions each materialization itself."""


@asset
def extra() -> None:
    pass


def gen_asset(code_version: str, deps: list) -> AssetsDefinition:
    @asset(name="gen", partitions_def=SHARD_STYLE, code_version=code_version, deps=deps)
    def _gen() -> None:
        pass

    return _gen


GEN_DEPS = [
    AssetDep(docs, partition_mapping=MultiToSingleDimensionPartitionMapping("shard")),
    AssetDep(notes, partition_mapping=MultiToSingleDimensionPartitionMapping("shard")),
    prompts,  # inferred: the style dimension
    model,
]


@asset(partitions_def=SHARD_STYLE, code_version="1", deps=["gen"])
def filtered() -> None:
    pass


@asset(code_version="1", deps=["gen"])
def summary() -> None:
    """Unpartitioned on a partitioned asset: every partition of it."""


@asset(
    partitions_def=STYLES,
    code_version="1",
    deps=[AssetDep("gen", partition_mapping=MultiToSingleDimensionPartitionMapping("style"))],
)
def per_style() -> None:
    pass


def small_graph(gen: AssetsDefinition) -> list:
    return [prompts, model, docs, notes, extra, gen, filtered, summary, per_style]


def key(shard: str, style: str) -> MultiPartitionKey:
    return MultiPartitionKey({"shard": shard, "style": style})


def test_unsynced_matches_dagsters_verdict_through_every_kind_of_change(instance):
    CURRENT.clear()
    CURRENT.update({"prompts[a]": "p1", "prompts[b]": "p1", "model": "m1"})
    CURRENT.update({"docs[s1]": "d1", "docs[s2]": "d1"})
    instance.add_dynamic_partitions(SHARDS.name, ["s1", "s2"])
    assets = small_graph(gen_asset("1", GEN_DEPS))

    def run(target, partition=None) -> None:
        assert materialize(
            assets, selection=[target], partition_key=partition, instance=instance
        ).success

    def same_verdict() -> dict:
        ours, theirs = verdicts(instance, assets)
        assert ours == theirs
        return ours

    for shard in ("s1", "s2"):
        run(docs, shard)
        run(notes, shard)
    # Materialized before any source was observed.
    for partition in (key("s1", "a"), key("s1", "b"), key("s2", "a")):
        run("gen", partition)
    assert same_verdict() == {}

    # The first observations: an unpartitioned source was recorded as INITIAL and now has a
    # version; a partitioned one had no event to point at, and Dagster does not compare it.
    run(prompts)
    run(model)
    found = same_verdict()
    assert found[("gen", key("s1", "a"))] == ("model has a new data version",)

    for shard in ("s1", "s2"):
        for style in ("a", "b"):
            run("gen", key(shard, style))
            run(filtered, key(shard, style))
    run(summary)
    run(per_style, "a")
    run(per_style, "b")
    assert same_verdict() == {}

    CURRENT["prompts[a]"] = "p2"
    run(prompts)
    found = same_verdict()
    assert found[("gen", key("s2", "a"))] == ("prompts[a] has a new data version",)
    assert ("gen", key("s2", "b")) not in found and ("filtered", key("s2", "a")) not in found

    # The same data version again changes nothing; an asset without a code version has a new
    # version at every materialization.
    run(docs, "s1")
    run(notes, "s1")
    found = same_verdict()
    assert found[("gen", key("s1", "b"))] == ("notes[s1] has a new materialization",)

    # A materialization reported without a run has no provenance: only newer materializations
    # of its dependencies count.
    instance.report_runless_asset_event(AssetMaterialization("gen", partition=key("s2", "b")))
    CURRENT["docs[s2]"] = "d2"
    run(docs, "s2")
    found = same_verdict()
    assert found[("gen", key("s2", "b"))] == ("docs[s2] has a new materialization",)
    assert "docs[s2] has a new data version" in found[("gen", key("s2", "a"))]

    # A version recorded as the regeneration schedule records it, without a run.
    instance.report_runless_asset_event(
        AssetObservation("model", tags={versions.DATA_VERSION_TAG: "m2"})
    )
    found = same_verdict()
    assert "model has a new data version" in found[("gen", key("s1", "a"))]

    # A new code version, a dependency removed and one added.
    assets = small_graph(gen_asset("2", [*GEN_DEPS[:3], extra]))
    found = same_verdict()
    assert found[("gen", key("s1", "a"))][:3] == (
        "gen[s1|a] has a new code version",
        "gen[s1|a] has a new dependency on extra",
        "gen[s1|a] removed dependency on model",
    )


def test_the_platforms_assets_get_dagsters_verdict(settings, instance, monkeypatch, tmp_path):
    """The platform's own graph, materialized by stand-ins, after a model, prompt and filter
    change."""
    import shutil

    from mind_assets.conversations.assets import conversations
    from mind_assets.filtering.assets import filtered_conversations
    from mind_assets.settings import PROJECT_DIR
    from mind_assets_tests.test_unsynced import edit, materialize_stand_in

    prompts_dir = tmp_path / "prompts"
    shutil.copytree(PROJECT_DIR / "prompts", prompts_dir)
    monkeypatch.setenv("MIND_PROMPTS_DIR", str(prompts_dir))
    instance.add_dynamic_partitions(SHARDS_PARTITION, ["s1"])
    record_versions(instance, get_settings())
    for style in ("debate", "two_students"):
        partition = MultiPartitionKey({"shard": "s1", "style": style})
        materialize_stand_in(conversations, partition, instance)
        materialize_stand_in(filtered_conversations, partition, instance)
    edit(prompts_dir / "mind" / settings.conversations.prompt_set / "debate.yaml")
    monkeypatch.setenv("MIND_FILTERS__MIN_COMPLETION_TOKENS", "80")
    monkeypatch.setenv("MIND_MODEL", "Qwen/Qwen3-0.6B")
    assert record_versions(instance, get_settings())

    status = UnsyncedStatus.of_repository(instance, GRAPH_DEFS.get_repository_def())
    dagster_status = DagsterVerdict(instance, GRAPH_DEFS)
    found = {}
    for key_, partition in every_partition(instance, GRAPH_DEFS.assets):
        item = status.unsynced(key_, partition)
        ours = item.causes if item else None
        assert ours == dagster_status.unsynced(key_, partition), (key_, partition)
        if ours:
            found[(key_, partition)] = ours
    assert found[("conversations", "s1|debate")] == (
        "llm_config has a new data version",
        "mind_prompts[debate] has a new data version",
    )
    assert found[("filtered_conversations", "s1|two_students")] == (
        "filter_config has a new data version",
    )
    assert len(found) == 4  # both styles of both assets


def test_every_dependency_partition_is_the_one_dagster_maps(instance):
    """For every edge of the platform's graph, the dependency partitions UnsyncedStatus judges
    a partition on are those Dagster's resolver uses."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.definitions.events import AssetKeyPartitionKey
    from dagster._core.definitions.partitions.context import partition_loading_context
    from dagster._core.loader import LoadingContext

    class Loading(LoadingContext):
        def __init__(self) -> None:
            self._loaders: dict = {}

        @property
        def instance(self):
            return instance

        @property
        def loaders(self) -> dict:
            return self._loaders

    instance.add_dynamic_partitions(SHARDS_PARTITION, ["s1", "s2"])
    instance.add_dynamic_partitions(TASK_FAMILIES_PARTITION, ["gsm8k", "piqa"])
    resolver = CachingStaleStatusResolver(instance, GRAPH_DEFS.resolve_asset_graph(), Loading())
    status = UnsyncedStatus.of_repository(instance, GRAPH_DEFS.get_repository_def())
    compared = 0
    with partition_loading_context(dynamic_partitions_store=instance):
        for key_, partition in every_partition(instance, GRAPH_DEFS.assets):
            asset_key = AssetKey.from_user_string(key_)
            theirs = resolver._get_partition_dependencies(
                key=AssetKeyPartitionKey(asset_key, partition)
            )
            ours = status.dependency_partitions(asset_key, partition)
            assert sorted(ours, key=str) == sorted(
                ((d.asset_key, d.partition_key) for d in theirs), key=str
            ), (key_, partition)
            compared += bool(ours)
    assert compared > 50


# ----- Each API mind_assets uses that Dagster does not mark @public, and each tag name. -----


@observable_source_asset(partitions_def=STYLES)
def contract_source() -> DataVersionsByPartition:
    return DataVersionsByPartition({"a": "va", "b": "vb"})


@observable_source_asset
def contract_setting() -> DataVersion:
    return DataVersion("s1")


@asset(partitions_def=STYLES, code_version="7", deps=[contract_source, contract_setting])
def contract_made() -> MaterializeResult:
    return MaterializeResult(data_version=DataVersion("out"))


CONTRACT_ASSETS = [contract_source, contract_setting, contract_made]


def latest_tags(instance, key: str, partition: str | None = None) -> dict:
    records = instance.fetch_materializations(
        AssetRecordsFilter(AssetKey(key), [partition] if partition else None), limit=1
    ).records
    return dict(records[0].asset_materialization.tags)


def test_the_tag_names_are_those_dagster_writes(instance):
    from dagster._core.definitions import data_version as private

    with relied_on("its data-version tag names", "mind_assets/lib/versions.py"):
        assert versions.DATA_VERSION_TAG == private.DATA_VERSION_TAG
        assert versions.CODE_VERSION_TAG == private.CODE_VERSION_TAG
        assert versions.USER_PROVIDED_TAG == private.DATA_VERSION_IS_USER_PROVIDED_TAG
        assert versions.INPUT_DATA_VERSION_PREFIX == private.INPUT_DATA_VERSION_TAG_PREFIX + "/"
        assert versions.INPUT_EVENT_POINTER_PREFIX == private.INPUT_EVENT_POINTER_TAG_PREFIX + "/"
        assert private.DEFAULT_DATA_VERSION.value == versions.INITIAL_VERSION
        assert versions.NO_EVENT_POINTER == private.NULL_EVENT_POINTER

    def run(target, partition=None):
        assert materialize(
            CONTRACT_ASSETS, selection=[target], partition_key=partition, instance=instance
        ).success

    with relied_on("the provenance tags on a materialization", "UnsyncedStatus"):
        run(contract_made, "a")  # before any observation
        tags = latest_tags(instance, "contract_made", "a")
        assert tags[versions.CODE_VERSION_TAG] == "7"
        assert tags[versions.DATA_VERSION_TAG] == "out"
        assert tags[versions.USER_PROVIDED_TAG] == "true"
        setting = "contract_setting"
        assert tags[versions.INPUT_DATA_VERSION_PREFIX + setting] == versions.INITIAL_VERSION
        assert tags[versions.INPUT_EVENT_POINTER_PREFIX + setting] == versions.NO_EVENT_POINTER

        run(contract_source)
        run(contract_setting)
        run(contract_made, "b")
        tags = latest_tags(instance, "contract_made", "b")
        assert tags[versions.INPUT_DATA_VERSION_PREFIX + setting] == "s1"
        [observed] = instance.fetch_observations(AssetKey("contract_source"), limit=1).records
        pointer = tags[versions.INPUT_EVENT_POINTER_PREFIX + "contract_source"]
        assert pointer == str(observed.storage_id)

    with relied_on("the data-version tag on observations", "record_current_versions"):
        assert latest_observed_version(instance, AssetKey("contract_source"), "b") == "vb"
        instance.report_runless_asset_event(
            AssetObservation("contract_setting", tags={versions.DATA_VERSION_TAG: "s2"})
        )
        assert latest_observed_version(instance, AssetKey("contract_setting"), None) == "s2"


def test_event_records_answer_as_relied_on(instance):
    by = "UnsyncedStatus (mind_assets/lib/versions.py)"
    for partition in ("a", "b", "a"):
        instance.report_runless_asset_event(AssetMaterialization("made", partition=partition))
    with relied_on("AssetRecordsFilter(before_storage_id=) and EventLogRecord", by):
        records = instance.fetch_materializations(
            AssetRecordsFilter(AssetKey("made"), ["a"]), limit=10
        ).records
        latest, first = records
        assert latest.storage_id > first.storage_id and latest.timestamp >= first.timestamp
        assert latest.asset_materialization is not None and latest.asset_observation is None
        before = AssetRecordsFilter(AssetKey("made"), ["a"], before_storage_id=latest.storage_id)
        [earlier] = instance.fetch_materializations(before, limit=1).records
        assert earlier.storage_id == first.storage_id  # strictly before
    with relied_on("DagsterInstance.get_materialized_partitions", by):
        assert instance.get_materialized_partitions(AssetKey("made")) == {"a", "b"}


def test_partition_definitions_answer_as_relied_on(instance):
    by = "UnsyncedStatus.dependency_partitions (mind_assets/lib/versions.py)"
    instance.add_dynamic_partitions(SHARDS.name, ["s1"])
    with relied_on("MultiPartitionsDefinition.get_partition_key_from_str", by):
        parsed = SHARD_STYLE.get_partition_key_from_str("s1|b")
    with relied_on("MultiPartitionKey.keys_by_dimension", by):
        assert parsed.keys_by_dimension == {"shard": "s1", "style": "b"}
    with relied_on("MultiPartitionsDefinition.partitions_defs (name, partitions_def)", by):
        assert [(d.name, d.partitions_def) for d in SHARD_STYLE.partitions_defs] == [
            ("shard", SHARDS),
            ("style", STYLES),
        ]
    with relied_on("MultiToSingleDimensionPartitionMapping.partition_dimension_name", by):
        assert MultiToSingleDimensionPartitionMapping("style").partition_dimension_name == "style"
    with relied_on(
        "StaticPartitionMapping.downstream_partition_keys_by_upstream_partition_key", by
    ):
        mapping = StaticPartitionMapping({"x": "y"})
        assert mapping.downstream_partition_keys_by_upstream_partition_key == {"x": "y"}
    with relied_on("PartitionsDefinition.get_partition_keys(dynamic_partitions_store=)", by):
        assert SHARDS.get_partition_keys(dynamic_partitions_store=instance) == ["s1"]


def test_cursor_storages_upsert_as_relied_on(instance):
    for storage, by in (
        ("run_storage", "InboxLedger (mind_assets/corpus/inbox_ledger.py)"),
        ("daemon_cursor_storage", "regenerate_unsynced_conversations' scan cursor"),
    ):
        api = f"DagsterInstance.{storage}.get_cursor_values / set_cursor_values"
        with relied_on(api, by):
            store = getattr(instance, storage)
            store.set_cursor_values({"contract/a": "1", "contract/b": "2"})
            store.set_cursor_values({"contract/a": "3"})  # an existing key, alone
            assert store.get_cursor_values({"contract/a", "contract/b", "contract/c"}) == {
                "contract/a": "3",
                "contract/b": "2",
            }


def test_a_schedule_context_carries_its_repository(instance):
    by = "regenerate_unsynced_conversations (UnsyncedStatus.of_repository)"
    repository = GRAPH_DEFS.get_repository_def()
    with (
        relied_on("ScheduleEvaluationContext.repository_def", by),
        build_schedule_context(instance=instance, repository_def=repository) as context,
    ):
        assert context.repository_def is repository
    with relied_on("RepositoryDefinition.assets_defs_by_key / source_assets_by_key", by):
        assert AssetKey("conversations") in repository.assets_defs_by_key
        assert AssetKey("mind_prompts") in repository.source_assets_by_key
