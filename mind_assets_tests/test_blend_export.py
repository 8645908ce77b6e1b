"""`blend_export` materializes like any asset (as the UI does it), from the blend's manifest,
with the settings' shard size and length buckets; `mind export-blend` writes the same rows."""

from __future__ import annotations

import pyarrow.parquet as pq

from mind_assets.blends.assets import blend_export, export_dir, write_manifest
from mind_assets.blends.manifest import build_manifest
from mind_assets.blends.spec import load_blend_spec
from mind_assets.blends.tokens import TokenCache
from mind_assets.cli import main as mind_cli
from mind_assets.lib.tokenizer import HFTokenizer
from mind_assets_tests.test_lineage import blend_spec_over_every_source, write_declared_families

BLEND = "example"  # a partition of blend_manifest and blend_export (blends/example.yaml)


def test_blend_export_materializes_and_the_cli_writes_the_same_rows(
    settings, llm, run, tmp_path, monkeypatch, capsys
):
    known = write_declared_families(settings.data_dir)
    spec_path = blend_spec_over_every_source(tmp_path / f"{BLEND}.yaml")
    manifest = build_manifest(
        load_blend_spec(spec_path),
        spec_path,
        settings.data_dir,
        known=known,
        tokens=TokenCache(
            settings.data_dir, HFTokenizer(llm.model_name, llm.model_path()), workers=1
        ),
        lookup=lambda asset, partition: {"run_id": None, "data_version": None},
    )
    write_manifest(settings, manifest)
    monkeypatch.setenv("MIND_BLENDS__EXPORT_SHARD_ROWS", "40")
    monkeypatch.setenv("MIND_BLENDS__EXPORT_BUCKET", "1")
    monkeypatch.setenv("MIND_LENGTH_BUCKETS", "[8, 16]")

    result = run([blend_export], BLEND)
    assert result.success
    [event] = result.asset_materializations_for_node("blend_export")
    phase = export_dir(settings, BLEND) / "all"
    shards = sorted(phase.glob("shard-*.parquet"))
    rows = pq.read_table(phase).to_pylist()
    assert event.metadata["rows"].value == len(rows) > 40 and len(shards) > 1
    assert {r["length_bucket"] for r in rows} <= {"<=8", "<=16", ">16"}

    # The CLI is the same function: the same rows under the same ids (bucketed, they were
    # ordered short to long; unbucketed, in mixed order).
    monkeypatch.delenv("MIND_BLENDS__EXPORT_BUCKET")
    assert mind_cli(["export-blend", BLEND, "--shard-rows", "1000"]) == 0
    again = pq.read_table(phase).to_pylist()
    assert sorted((r["row_id"], r["source_row_id"]) for r in again) == sorted(
        (r["row_id"], r["source_row_id"]) for r in rows
    )
    assert len(list(phase.glob("shard-*.parquet"))) == 1 and again[0]["length_bucket"] is None

    capsys.readouterr()
    traced = next(r for r in again if r["source_asset"] == "solution_traces")
    assert mind_cli(["trace", traced["row_id"]]) == 0
    assert "== problem ==" in capsys.readouterr().out
