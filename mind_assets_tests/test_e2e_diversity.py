"""G-Vendi and both baselines on real conversations generated from napkin text, through Dagster:
in the materialization metadata (what the UI plots) and in `mind metrics`; features are reused
on a rerun."""

import pytest
from dagster import AssetKey, MultiPartitionKey

from mind_assets.conversations.assets import conversations
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.diversity.assets import diversity, register_targets
from mind_assets.metrics.report import format_metrics
from mind_assets.metrics.store import metrics_store
from mind_assets_tests.conftest import WORLD_SECTIONS, WORLD_SHARD, napkin_shard

pytestmark = pytest.mark.engine


def test_g_vendi_and_baselines_on_real_conversations(
    napkin_world, settings, run, register, instance, monkeypatch
):
    monkeypatch.setenv("MIND_DIVERSITY_MAX_TOKENS", "128")
    styles = ("teacher_student", "debate")
    napkin_world.copy_generations(settings.data_dir, styles)
    register(napkin_shard(WORLD_SHARD, WORLD_SECTIONS))
    run([raw_documents, chunks], WORLD_SHARD)
    targets = []
    for style in styles:
        key = MultiPartitionKey({"shard": WORLD_SHARD, "style": style})
        assert run([conversations], key).success
        targets.append(f"conversations:{WORLD_SHARD}:{style}")
    register_targets(instance, targets)

    for target in targets:
        assert run([diversity], target).success
        metadata = instance.get_latest_materialization_event(
            AssetKey("diversity")
        ).asset_materialization.metadata
        samples = metadata["samples"].value
        assert samples >= 6
        assert 1.0 <= metadata["g_vendi"].value <= samples
        assert 1.0 <= metadata["embedding_vendi"].value <= samples
        assert 0.0 < metadata["distinct_2"].value <= 1.0
        assert metadata["features_computed"].value == samples

    assert run([diversity], targets[0]).success  # features come from the cache
    metadata = instance.get_latest_materialization_event(
        AssetKey("diversity")
    ).asset_materialization.metadata
    assert metadata["features_computed"].value == 0
    assert metadata["features_reused"].value == metadata["samples"].value

    rows = metrics_store(settings.data_dir).query("SELECT * FROM diversity").to_pylist()
    assert {r["target"] for r in rows} == set(targets)
    assert next(r for r in rows if r["target"] == targets[0])["runs"] == 2
    report = format_metrics(settings.data_dir, ["diversity"])
    assert "g_vendi" in report and "embedding_vendi" in report and targets[1] in report
    print(report)
