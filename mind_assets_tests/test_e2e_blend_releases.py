"""A production week with the real engine on ../shared/data: a blend is built and exported in
both formats, a trainer takes a copy and the version is tagged; the corpus and one conversation
partition are regenerated, the nightly schedule's job rebuilds the manifest (twice), the current
version is exported again and `mind gc --older-than 0 --apply` runs. The trainer's rows still
trace to their original text by the version they record, `mind export-blend NAME@VERSION`
re-creates the trainer's copy byte for byte in both formats, and the untagged version beyond
retention is gone with the outputs only it pinned."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import MultiPartitionKey, build_schedule_context
from megatron.core.datasets.indexed_dataset import IndexedDataset

from mind_assets.blends.assets import blend_export, blend_manifest
from mind_assets.blends.release import release_version
from mind_assets.blends.schedules import nightly_blend_rebuild
from mind_assets.blends.versions import version_ids
from mind_assets.cli import main as mind_cli
from mind_assets.conversations.assets import conversations, mind_prompts
from mind_assets.conversations.styles import CONVERSATION_STYLE_KEYS
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.outputs import RAW_DOCUMENTS
from mind_assets.corpus.shards import ShardSpec
from mind_assets.filtering.assets import filtered_conversations
from mind_assets.lib.storage import blend_export_dir, current_version
from mind_assets_tests.conftest import WORLD_SHARD, world_sections, world_shard
from mind_assets_tests.test_e2e_filtering import LENIENT_PROFILE

pytestmark = pytest.mark.engine

BLEND = "raw_and_conversations"  # blends/raw_and_conversations.yaml


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def revised_corpus(tmp_path: Path, marker: str) -> ShardSpec:
    """The shard's sections with their text changed, as a corpus refresh would bring."""
    revised = []
    for record in world_sections():
        record["text"] = f"{marker} {record['text']}"
        revised.append(json.dumps(record))
    path = tmp_path / f"napkin-{marker}.jsonl"
    path.write_text("\n".join(revised) + "\n")
    return ShardSpec(name=WORLD_SHARD, kind="local", paths=[str(path)], start=0, stop=None)


def nightly_rebuild(instance, run) -> None:
    """What the nightly schedule asks for, run as its job would run it."""
    context = build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(UTC))
    requests = {r.partition_key: r for r in nightly_blend_rebuild(context)}
    assert run([blend_manifest], requests[BLEND].partition_key).success


def test_a_trainers_blend_version_survives_regeneration_the_nightly_rebuild_and_gc(
    napkin_world, settings, run, register, instance, monkeypatch, tmp_path, capsys
):
    for name, value in LENIENT_PROFILE.items():  # keep some of the 135M model's conversations
        monkeypatch.setenv(f"MIND_FILTERS__{name}", value)
    monkeypatch.setenv("MIND_BLENDS__EXPORT_FORMATS", '["parquet", "megatron"]')
    monkeypatch.setenv("MIND_BLENDS__KEEP_VERSIONS", "0")
    napkin_world.copy_generations(settings.data_dir)
    register(world_shard())
    run([mind_prompts])
    run([raw_documents, chunks], WORLD_SHARD)
    for style in CONVERSATION_STYLE_KEYS:
        key = MultiPartitionKey({"shard": WORLD_SHARD, "style": style})
        run([conversations], key)
        run([filtered_conversations], key, raise_on_error=False)

    # Monday: the blend is built and exported; the trainer copies the export; it is tagged.
    assert run([blend_manifest], BLEND).success
    assert run([blend_export], BLEND).success
    trainers_copy = tmp_path / "trainer"
    shutil.copytree(blend_export_dir(settings.data_dir, BLEND), trainers_copy)
    first = release_version(trainers_copy)
    assert first and version_ids(settings.data_dir, BLEND) == [first]
    assert mind_cli(["blends", "tag", f"{BLEND}@{first}", "trained-run-42"]) == 0
    first_raw = current_version(RAW_DOCUMENTS.path(settings.data_dir, {"shard": WORLD_SHARD}))

    # Tuesday: the corpus is refreshed and one conversation partition regenerated (another
    # seed: the engine writes new conversations); the nightly job rebuilds the manifest.
    register(revised_corpus(tmp_path, "REVISED"))
    run([raw_documents], WORLD_SHARD)
    second_raw = current_version(RAW_DOCUMENTS.path(settings.data_dir, {"shard": WORLD_SHARD}))
    monkeypatch.setenv("MIND_SEED", "7")
    # New conversations are all this needs (what the engine writes is tested elsewhere): short
    # replies, a fifth of the decode steps.
    monkeypatch.setenv("MIND_MAX_TOKENS", "32")
    key = MultiPartitionKey({"shard": WORLD_SHARD, "style": "teacher_student"})
    [event] = run([conversations], key).asset_materializations_for_node("conversations")
    assert event.metadata["generated_requests"].value > 0
    run([filtered_conversations], key, raise_on_error=False)
    nightly_rebuild(instance, run)
    second = version_ids(settings.data_dir, BLEND)[-1]

    # Wednesday: the corpus again, the nightly rebuild again, and the current version exported.
    register(revised_corpus(tmp_path, "AGAIN"))
    run([raw_documents], WORLD_SHARD)
    nightly_rebuild(instance, run)
    third = version_ids(settings.data_dir, BLEND)[-1]
    assert len({first, second, third}) == 3
    assert run([blend_export], BLEND).success
    assert release_version(blend_export_dir(settings.data_dir, BLEND)) == third

    # gc keeps the tagged version and the current one; the untagged one in between goes, and
    # the raw documents only it pinned with it.
    assert mind_cli(["gc", "--older-than", "0", "--apply"]) == 0
    assert version_ids(settings.data_dir, BLEND) == [first, third]
    assert first_raw.exists() and not second_raw.exists()

    # The trainer's rows, by the version they record, trace to their original text.
    rows = pq.read_table(trainers_copy / "phase1").to_pylist()
    assert {r["blend_version"] for r in rows} == {first}
    for asset in ("raw_documents", "filtered_conversations"):
        row = next(r for r in rows if r["source_asset"] == asset)
        assert row["row_id"].startswith(f"{BLEND}@{first}:phase1:")
        capsys.readouterr()
        assert mind_cli(["trace", row["row_id"]]) == 0
        traced = capsys.readouterr().out
        assert json.dumps(row["text"], ensure_ascii=False)[1:200] in traced
        if asset == "raw_documents":
            assert "REVISED" not in traced and "AGAIN" not in traced
    documents = pq.read_table(trainers_copy / "megatron" / "phase1" / "documents.parquet")
    assert set(documents["blend_version"].to_pylist()) == {first}
    prefix = documents["prefix"][0].as_py()
    assert len(IndexedDataset(str(trainers_copy / "megatron" / prefix))) > 0

    # The trainer's copy, re-created byte for byte in both formats from the tagged version.
    assert mind_cli(["export-blend", f"{BLEND}@{first}"]) == 0
    recreated = blend_export_dir(settings.data_dir, BLEND, first)
    assert file_bytes(recreated) == file_bytes(trainers_copy)
    assert release_version(blend_export_dir(settings.data_dir, BLEND)) == third
