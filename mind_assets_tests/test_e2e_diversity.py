"""G-Vendi and both baselines on real conversations generated from napkin text, through Dagster:
in the materialization metadata (what the UI plots) and in `mind metrics`; features are reused
on a rerun. Then two Prismatic rounds on GSM8K task Q&A with the real engine and real
gradients, G-Vendi recorded per round, and the kept items blended by the shipped
`prismatic` blend."""

import json

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, MultiPartitionKey

from mind_assets.blends.assets import blend_manifest, manifest_dir
from mind_assets.conversations.assets import conversations
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.diversity.assets import diversity, register_targets
from mind_assets.lib.storage import asset_path
from mind_assets.metrics.report import format_metrics
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import PROJECT_DIR
from mind_assets.task_qa.assets import prismatic_task_qa, task_qa, task_seed_catalog, task_seeds
from mind_assets_tests.conftest import (
    TEST_ENVIRONMENT,
    WORLD_SECTIONS,
    WORLD_SHARD,
    napkin_shard,
)

pytestmark = pytest.mark.engine


def test_g_vendi_and_baselines_on_real_conversations(
    napkin_world, settings, run, register, instance, monkeypatch
):
    monkeypatch.setenv("MIND_DIVERSITY__MAX_TOKENS", "128")
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


def test_two_prismatic_rounds_with_g_vendi_per_round_feed_a_blend(
    settings, run, instance, mirror, monkeypatch, tmp_path
):
    # Small on purpose: 20 GSM8K seeds (4 clusters), 8 items a round, short gradients.
    for name, value in {
        "MIND_TASK_MIRROR_DIR": str(mirror),
        "MIND_TASK_QA__FAMILIES": '["gsm8k"]',
        "MIND_TASK_QA__ITEMS": "8",
        "MIND_TASK_QA__SEED_LIMIT": "20",
        "MIND_DIVERSITY__MAX_TOKENS": "128",
        "MIND_DIVERSITY__PRISMATIC_CLUSTER_FRACTION": "0.2",
        "MIND_DIVERSITY__PRISMATIC_VERIFY_SAMPLES": "3",
    }.items():
        monkeypatch.setenv(name, value)
    assert run([task_seed_catalog]).success
    assert run([task_seeds], "gsm8k").success
    # Round 1 filters what task_qa kept, and the blend below needs kept items. The 135M model's
    # GSM8K items seldom pass the task rules (its arithmetic rarely matches its own answer), and
    # which ones do depends on the CPU's numerics: in bf16 on one machine all 8 items of seed 0
    # failed. So task_qa is generated (at 256 tokens, as test_e2e_task_qa runs) with the next
    # base seed until it keeps an item, three seeds at most; the rounds keep 160 tokens.
    monkeypatch.setenv("MIND_MAX_TOKENS", "256")
    for seed in range(3):
        monkeypatch.setenv("MIND_SEED", str(seed))
        [event] = run([task_qa], "gsm8k").asset_materializations_for_node("task_qa")
        if event.metadata["dagster/row_count"].value > 0:
            break
    assert event.metadata["dagster/row_count"].value > 0, "round 1 needs items task_qa kept"
    monkeypatch.setenv("MIND_MAX_TOKENS", TEST_ENVIRONMENT["MIND_MAX_TOKENS"])

    def prismatic_rounds() -> tuple[list[dict], list[dict]]:
        assert run([prismatic_task_qa], "gsm8k").success
        metadata = instance.get_latest_materialization_event(
            AssetKey("prismatic_task_qa")
        ).asset_materialization.metadata
        print(metadata["rounds"].value)
        rounds = (
            metrics_store(settings.data_dir)
            .query("SELECT * FROM prismatic_rounds WHERE family = 'gsm8k' ORDER BY round")
            .to_pylist()
        )
        assert [r["round"] for r in rounds] == [0, 1, 2]
        assert rounds[0]["pool_after"] == 20 and rounds[1]["pool"] == 20
        assert rounds[1]["clusters"] == 4
        assert rounds[2]["pool"] == rounds[1]["pool_after"] == 20 + rounds[1]["kept"]
        for r in rounds:
            assert 1.0 <= r["g_vendi_pool"] <= r["pool_after"]
            recorded = metadata[f"g_vendi_pool_round_{r['round']}"].value
            assert recorded == pytest.approx(r["g_vendi_pool"])
        kept = pq.read_table(
            asset_path(settings.data_dir, "prismatic_task_qa", "gsm8k")
        ).to_pylist()
        dropped = pq.read_table(
            asset_path(
                settings.data_dir, "prismatic_task_qa", "gsm8k", suffix=".quarantine.parquet"
            )
        ).to_pylist()
        # Round 2 generated its own items (kept, or dropped by the task rules or the filter).
        assert {r["prismatic_round"] for r in kept + dropped} == {1, 2}
        return kept, dropped

    # The recipe: math items the filter keeps must agree with a majority of 3 sampled solutions.
    kept, dropped = prismatic_rounds()
    for row in kept:
        assert row["majority_samples"] == 3 and 2 * row["majority_votes"] > 3
    checked = [r for r in dropped if r["majority_samples"]]
    for row in checked:
        assert row["rejected_by"][0] in ("majority_disagrees", "no_majority")
    print(f"prismatic: kept {len(kept)}, dropped {len(dropped)} ({len(checked)} by majority)")

    # The 135M model seldom solves its own problems, so its majority rarely confirms one: for the
    # blend half the rounds run again with the check off and every cluster kept (settings a user
    # has too), which keeps each item that passed the task rules.
    monkeypatch.setenv("MIND_DIVERSITY__PRISMATIC_VERIFY_SAMPLES", "0")
    monkeypatch.setenv("MIND_DIVERSITY__PRISMATIC_KEEP_FRACTION", "1.0")
    kept, dropped = prismatic_rounds()
    assert not any(r["majority_samples"] for r in kept + dropped)
    assert kept, "the blend below needs at least one item the rounds kept"

    blends = tmp_path / "blends"  # the shipped spec, at a token budget these few items fill
    blends.mkdir()
    spec = (PROJECT_DIR / "blends" / "prismatic.yaml").read_text()
    (blends / "prismatic.yaml").write_text(spec.replace("total_tokens: 2000", "total_tokens: 400"))
    monkeypatch.setenv("MIND_BLENDS_DIR", str(blends))
    assert run([blend_manifest], "prismatic").success
    manifest = json.loads((manifest_dir(settings, "prismatic") / "manifest.json").read_text())
    phase2 = next(p for p in manifest["phases"] if p["name"] == "phase2")
    source = next(s for s in phase2["sources"] if s["asset"] == "prismatic_task_qa")
    assert source["tokens"] > 0 and sum(f["rows"] for f in source["files"]) == len(kept)
