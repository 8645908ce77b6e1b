"""The Dagster instance on a real PostgreSQL server (dagster-postgres)."""

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from mind_assets.corpus.assets import raw_documents
from mind_assets.corpus.shards import register_shard
from mind_assets.llm.resource import LLMResource
from mind_assets_tests.conftest import napkin_shard
from mind_assets_tests.postgres import PostgresMissing, throwaway_postgres


@pytest.fixture
def postgres_url():
    try:
        with throwaway_postgres() as url:
            yield url
    except PostgresMissing as missing:
        pytest.fail(str(missing))


def test_materialize_a_partition_with_the_instance_on_postgres(settings, postgres_url, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: {postgres_url}\ntelemetry:\n  enabled: false\n"
    )
    instance = DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        register_shard(instance, settings, napkin_shard("napkin1", 1))
        llm = LLMResource.from_settings(settings)
        result = materialize(
            [raw_documents], partition_key="napkin1", instance=instance, resources={"llm": llm}
        )
        assert result.success
        event = instance.get_latest_materialization_event(AssetKey("raw_documents"))
        assert event.run_id == result.run_id and event.asset_materialization.partition == "napkin1"
        assert instance.get_dynamic_partitions("shards") == ["napkin1"]
    finally:
        instance.dispose()
