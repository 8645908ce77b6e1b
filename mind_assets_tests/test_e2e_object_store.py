"""A shard from raw text to a blend export with the data root in object storage
(`MIND_DATA_DIR=s3://...`, moto's S3 server on 127.0.0.1), through Dagster with the real engine.
Every step starts from an empty working copy, as a fresh pod would: what it reads comes from the
store, and the export is read back from the store itself."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from dagster import MultiPartitionKey

from mind_assets.blends.assets import blend_export, blend_manifest
from mind_assets.conversations.assets import conversations, mind_prompts
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.shards import register_shard
from mind_assets.filtering.assets import filtered_conversations
from mind_assets_tests.conftest import napkin_shard
from mind_assets_tests.s3_server import local_s3
from mind_assets_tests.test_e2e_filtering import LENIENT_PROFILE

pytestmark = pytest.mark.engine

SHARD = "s3shard"
RULES_OFF = [
    "truncated",
    "not_a_conversation",
    "unfaithful",
    "degenerate_repetition",
    "non_text",
    "too_short",
]
STYLE = "teacher_student"
BLEND = """\
name: example
description: Raw pages and one MIND style of one shard, to prove a blend over object storage.
total_tokens: 600
seed: 0
phases:
  - name: phase1
    fraction: 1.0
    sources:
      - name: raw_math_pages
        asset: raw_documents
        quality_tier: low
        share: 0.5
        max_epochs: 8
      - name: mind_teacher_student
        asset: filtered_conversations
        selection:
          styles: [teacher_student]
        quality_tier: high
        share: 0.5
        max_epochs: 8
"""


def test_a_shard_goes_raw_to_blend_export_with_the_data_root_in_s3(
    settings, instance, run, tmp_path, monkeypatch
):
    blends = tmp_path / "blends"
    blends.mkdir()
    (blends / "example.yaml").write_text(BLEND)
    monkeypatch.setenv("MIND_BLENDS_DIR", str(blends))
    # This test is about where the bytes live, not about the rules (tested on their own): with
    # the rules the 135M model's few conversations trip off, every row passes the filter stage.
    for name, value in LENIENT_PROFILE.items():
        monkeypatch.setenv(f"MIND_FILTERS__{name}", value)
    monkeypatch.setenv("MIND_FILTERS__DISABLED_RULES", json.dumps(RULES_OFF))

    with local_s3() as s3:
        url = f"s3://{s3.bucket}/e2e"
        fresh_pod = s3.fresh_working_copies(url, tmp_path, monkeypatch)

        register_shard(instance, fresh_pod(), napkin_shard(SHARD, 2))
        fresh_pod()
        run([mind_prompts])
        run([raw_documents, chunks], SHARD)
        key = MultiPartitionKey({"shard": SHARD, "style": STYLE})
        fresh_pod()  # reads chunks from the store
        [event] = run([conversations], key).asset_materializations_for_node("conversations")
        assert event.metadata["generated_requests"].value > 0
        fresh_pod()  # reads conversations and chunks from the store
        filtered = run([filtered_conversations], key)
        [event] = filtered.asset_materializations_for_node("filtered_conversations")
        assert event.metadata["dagster/row_count"].value > 0
        fresh_pod()  # lists and pins what the store holds
        assert run([blend_manifest], "example").success
        last = fresh_pod()  # reads the manifest and the pinned versions from the store
        assert run([blend_export], "example").success

        keys = s3.object_keys()
        root = f"{s3.bucket}/e2e"
        assert not [k for k in keys if k.endswith(".tmp")], "a temporary object was left"
        fs = s3.filesystem()
        versions = f"{root}/blend_manifest/example/.versions/manifest.json"
        current = fs.cat_file(f"{versions}/CURRENT").decode().strip()
        manifest = json.loads(fs.cat_file(f"{versions}/{current}"))
        pinned = [f["path"] for p in manifest["phases"] for s in p["sources"] for f in s["files"]]
        assert pinned and all(f"{root}/{path}" in keys for path in pinned)
        assert all(".versions/" in path for path in pinned)  # versions, never the pointer

        fs.invalidate_cache()
        exported = pq.read_table(f"{root}/blend_exports/example/phase1", filesystem=fs)
        rows = exported.to_pylist()
        assert {r["source"] for r in rows} == {"raw_math_pages", "mind_teacher_student"}
        generated = [r for r in rows if r["source"] == "mind_teacher_student"]
        assert all(r["source_file"] in pinned for r in generated)
        assert sum(r["n_tokens"] for r in rows) > 0
        # The pod that exported read only what its step needed, and wrote the export.
        assert (last.data_dir / "blend_exports" / "example" / "phase1").is_dir()
        assert not (last.data_dir / "conversations").exists()
        print(f"object store: {len(keys)} objects; export phase1 {len(rows)} rows")
