"""Blend releases without the engine: every manifest build is a version a reference can name,
tags and retention decide what `mind gc` deletes, accepted rows and their quarantine are one
commit, and the quality gate keeps out what failed a blocking check."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from mind_assets.blends.families import BLENDED_STAGES
from mind_assets.blends.gates import QualityGateError, blocking_checks, instance_gate
from mind_assets.blends.gc import collect
from mind_assets.blends.lineage import format_audit
from mind_assets.blends.manifest import build_manifest
from mind_assets.blends.spec import load_blend_spec
from mind_assets.blends.versions import (
    BlendRef,
    BlendVersionError,
    current_version_id,
    load_manifest_version,
    read_tags,
    save_manifest_version,
    tag,
    version_ids,
)
from mind_assets.cli import main as mind_cli
from mind_assets.corpus.outputs import RAW_DOCUMENTS
from mind_assets.filtering.assets import filtered_conversations
from mind_assets.filtering.outputs import FILTERED_CONVERSATIONS
from mind_assets.lib import storage
from mind_assets.lib.quarantine import write_split
from mind_assets.lib.storage import current_version, read_output, write_parquet_version
from mind_assets_tests.blend_helpers import word_tokens
from mind_assets_tests.filter_rows import GOOD, row
from mind_assets_tests.test_e2e_filtering import STYLE, hand_made_partition
from mind_assets_tests.test_lineage import (
    blend_spec_over_every_source,
    key_of,
    make_row,
    write_declared_families,
)

UNKNOWN = {"run_id": None, "data_version": None}


def build(data_dir: Path, spec: Path, known: dict) -> str:
    """Build the blend's manifest and save it as its new version; returns the version id."""
    manifest = build_manifest(
        load_blend_spec(spec),
        spec,
        data_dir,
        known=known,
        tokens=word_tokens(data_dir),
        lookup=lambda asset, partition: UNKNOWN,
    )
    save_manifest_version(data_dir, manifest)
    return manifest.version


def rewrite_raw_documents(data_dir: Path, marker: str) -> Path:
    """A regenerated raw_documents partition (new text); returns the version written."""
    keys = {dim.name: key_of(dim) for dim in RAW_DOCUMENTS.dims}
    rows = [{**make_row(RAW_DOCUMENTS, i), "text": f"{marker} {i}"} for i in range(3)]
    path = RAW_DOCUMENTS.path(data_dir, keys)
    write_parquet_version(pa.Table.from_pylist(rows, schema=RAW_DOCUMENTS.schema), path)
    return current_version(path)


@pytest.fixture
def blend(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("MIND_DATA_DIR", str(data_dir))
    known = write_declared_families(data_dir)
    spec = blend_spec_over_every_source(tmp_path / "keep.yaml")
    return data_dir, spec, known


def test_each_manifest_build_is_a_new_version_and_a_reference_names_one(blend, capsys):
    data_dir, spec, known = blend
    first = build(data_dir, spec, known)
    rewrite_raw_documents(data_dir, "regenerated")
    second = build(data_dir, spec, known)
    assert version_ids(data_dir, "keep") == [first, second] and first != second
    assert current_version_id(data_dir, "keep") == second
    # The first manifest is still there, whole, and pins the raw documents of its day.
    old = load_manifest_version(data_dir, BlendRef("keep", first))
    assert old.version == first and old.ref == f"keep@{first}"
    raw = next(s for p in old.phases for s in p.sources if s.asset == "raw_documents")
    texts = read_output(raw.files[0].resolve(data_dir))["text"].to_pylist()
    assert not any(t.startswith("regenerated") for t in texts)
    assert load_manifest_version(data_dir, BlendRef("keep")).version == second
    assert load_manifest_version(data_dir, BlendRef.parse(f"keep@{first[:20]}")).version == first
    with pytest.raises(BlendVersionError, match="has no version 'nope'; known: "):
        load_manifest_version(data_dir, BlendRef("keep", "nope"))
    with pytest.raises(BlendVersionError, match="ambiguous"):
        load_manifest_version(data_dir, BlendRef("keep", first[:2]))

    assert mind_cli(["blends", "tag", f"keep@{first}", "trained-run-42"]) == 0
    capsys.readouterr()
    assert mind_cli(["blends", "versions", "keep"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith(f"  keep@{first}") and "tags: trained-run-42" in listed[0]
    assert listed[1].startswith(f"* keep@{second}")


def test_tags_and_retention_decide_what_gc_deletes(blend):
    """An untagged version beyond retention is deleted with the versions only it pinned; a
    tagged one and the current one keep theirs, and retention keeps the newest untagged."""
    data_dir, spec, known = blend
    first_raw = current_version(RAW_DOCUMENTS.path(data_dir, {"shard": "shard1"}))
    first = build(data_dir, spec, known)
    tag(data_dir, BlendRef("keep", first), "trained-run-42")
    second_raw = rewrite_raw_documents(data_dir, "second")
    second = build(data_dir, spec, known)
    third_raw = rewrite_raw_documents(data_dir, "third")
    third = build(data_dir, spec, known)

    kept = collect(data_dir, 0, apply=True, keep=1)  # `second` is the newest untagged one
    assert not [g for g in kept if g.kind in ("version", "blend version")]
    garbage = collect(data_dir, 0, apply=True, keep=0)
    deleted = {(g.kind, g.path) for g in garbage}
    assert ("version", second_raw) in deleted
    assert any(kind == "blend version" and second in path.name for kind, path in deleted)
    assert version_ids(data_dir, "keep") == [first, third]
    assert first_raw.exists() and third_raw.exists() and not second_raw.exists()
    assert read_tags(data_dir, "keep") == {"trained-run-42": first}
    with pytest.raises(BlendVersionError, match="no version"):
        load_manifest_version(data_dir, BlendRef("keep", second))


def test_accepted_rows_and_their_quarantine_are_one_commit(tmp_path, monkeypatch):
    """The accepted pointer's move is the commit: a writer that dies after writing both new
    versions, before moving the pointer, leaves the old accepted rows and the old quarantine
    read together; once it moves, the new quarantine comes with the new rows."""
    keys = {"shard": "s", "style": STYLE}
    partition = FILTERED_CONVERSATIONS.partition(tmp_path, keys)
    quarantined = pa.Table.from_pylist(
        [{**row(GOOD, 9), "rejected_by": ["too_short"], "rule_values": "{}"}],
        schema=FILTERED_CONVERSATIONS.quarantine_schema,
    )
    write_split(FILTERED_CONVERSATIONS, tmp_path, keys, read_rows(1), quarantined)
    assert partition.read_quarantine()["conversation_id"].to_pylist() == ["c9"]

    moves = []
    point_at = storage.point_at

    def die_at_the_commit(final, version, **kwargs):
        if final == partition.path:
            moves.append(final)
            raise SystemExit("killed")
        return point_at(final, version, **kwargs)

    monkeypatch.setattr(storage, "point_at", die_at_the_commit)
    empty = quarantined.slice(0, 0)
    with pytest.raises(SystemExit):
        write_split(FILTERED_CONVERSATIONS, tmp_path, keys, read_rows(2), empty)
    assert moves == [partition.path]
    assert partition.read().num_rows == 1
    assert partition.read_quarantine().num_rows == 1  # the old pair, never half of each
    monkeypatch.undo()
    write_split(FILTERED_CONVERSATIONS, tmp_path, keys, read_rows(2), empty)
    assert (partition.read().num_rows, partition.read_quarantine().num_rows) == (2, 0)


def read_rows(n: int) -> pa.Table:
    return pa.Table.from_pylist(
        [{**row(GOOD, i), "preamble_stripped": False} for i in range(n)],
        schema=FILTERED_CONVERSATIONS.schema,
    ).select(FILTERED_CONVERSATIONS.schema.names)


def gate_spec(path: Path, on_failed_check: str) -> Path:
    source = {
        "name": "mind",
        "asset": "filtered_conversations",
        "selection": {"shards": ["good", "bad"], "styles": [STYLE]},
        "quality_tier": "medium",
        "share": 1.0,
        "max_epochs": 4,
    }
    path.write_text(
        json.dumps(
            {
                "name": path.stem,
                "total_tokens": 100,
                "on_failed_check": on_failed_check,
                "phases": [{"name": "phase1", "fraction": 1.0, "sources": [source]}],
            }
        )
    )
    return path


def test_a_partition_that_failed_a_blocking_check_is_left_out_and_named(
    settings, run, register, instance, tmp_path
):
    good = hand_made_partition(settings, register, tmp_path, "good", [row(GOOD, 0)])
    assert run([filtered_conversations], good).success
    # Three copies of one conversation with the prompt version (lineage) missing: the one kept
    # fails the blocking lineage_non_null check, yet it is the partition's current version.
    bad_rows = [row(GOOD, i, prompt_version=None) for i in range(3)]
    bad = hand_made_partition(settings, register, tmp_path, "bad", bad_rows)
    checks = run([filtered_conversations], bad, raise_on_error=False).get_asset_check_evaluations()
    assert {e.check_name: e.passed for e in checks}["lineage_non_null"] is False
    gate = instance_gate(instance, blocking_checks(BLENDED_STAGES))
    known = {"shard": ["good", "bad"]}

    def build_with_gate(spec: Path):
        return build_manifest(
            load_blend_spec(spec),
            spec,
            settings.data_dir,
            known=known,
            tokens=word_tokens(settings.data_dir),
            lookup=lambda asset, partition: UNKNOWN,
            gate=gate,
        )

    manifest = build_with_gate(gate_spec(tmp_path / "gated.yaml", "exclude"))
    [source] = manifest.phases[0].sources
    assert [f.partition for f in source.files] == [f"good|{STYLE}"]
    assert manifest.excluded == [
        {
            "source": "mind",
            "asset": "filtered_conversations",
            "partition": f"bad|{STYLE}",
            "checks": ["lineage_non_null: failed"],
        }
    ]
    audit = format_audit(manifest, settings.data_dir, lambda asset, partition: UNKNOWN)
    assert (
        f"left out by a quality gate: filtered_conversations[bad|{STYLE}] (source mind): "
        "lineage_non_null: failed"
    ) in audit

    with pytest.raises(QualityGateError, match=rf"filtered_conversations\[bad\|{STYLE}\]"):
        build_with_gate(gate_spec(tmp_path / "strict.yaml", "fail"))

    # A version no materialization wrote (say, copied in by hand) was never checked.
    keys = {"shard": "good", "style": STYLE}
    FILTERED_CONVERSATIONS.partition(settings.data_dir, keys).write(read_rows(2))
    never_ran = rf"good\|{STYLE}\]: not_empty: never ran on its current version"
    with pytest.raises(QualityGateError, match=never_ran):
        build_with_gate(gate_spec(tmp_path / "strict.yaml", "fail"))
