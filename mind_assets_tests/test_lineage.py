"""Every declared output family, blended, exported and traced back to its root; the audit names
each partition by its own family. Rows are made from the declarations alone (schemas, partition
dimensions, parent links), so a family added to blends/families.py is covered without editing
this test."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import MultiPartitionKey

from mind_assets.blends.families import BLEND_SOURCES, FAMILIES
from mind_assets.blends.lineage import audit_rows, trace_row
from mind_assets.blends.manifest import build_manifest, upstream_chain
from mind_assets.blends.spec import load_blend_spec
from mind_assets.conversations.styles import STYLE_KEYS
from mind_assets.lib.outputs import OutputFamily, PartitionDim
from mind_assets_tests.blend_helpers import save_and_export, word_tokens

ROWS = 3


def key_of(dim: PartitionDim) -> str:
    """One partition key per dimension: a declared one, else a registered-looking name."""
    return dim.values[0] if dim.values else f"{dim.name}1"


KEYS = {dim.name: key_of(dim) for family in FAMILIES.values() for dim in family.dims}


def filler(kind: pa.DataType) -> Any:
    if pa.types.is_list(kind):
        return []
    if pa.types.is_struct(kind):
        return {f.name: filler(f.type) for f in kind}
    if pa.types.is_timestamp(kind):
        return datetime(2026, 1, 1, tzinfo=UTC)
    if pa.types.is_boolean(kind):
        return False
    if pa.types.is_integer(kind):
        return 0
    if pa.types.is_floating(kind):
        return 0.0
    return "{}"  # a string that is also valid JSON (sampling_params)


def row_id(family: OutputFamily, i: int) -> str:
    """Row i's id. A family whose rows keep their parent's id (filtered conversations keep the
    conversation's) links through its id column."""
    for link in family.parents:
        if link.column == family.id_column:
            return row_id(link.family, i)
    return f"{family.name}-{i}"


def make_row(family: OutputFamily, i: int) -> dict[str, Any]:
    """Row i of a family: its partition in the columns named after its dimensions, and row i of
    each parent as its parent."""
    row = {f.name: filler(f.type) for f in family.schema}
    # Columns named after a dimension hold the row's key of it, the parent's dimensions too
    # (a longest conversation's style names its filtered partition).
    row.update({name: key for name, key in KEYS.items() if name in row})
    for link in family.parents:
        parent_id = row_id(link.family, i)
        row[link.column] = [parent_id] if link.many else parent_id
    row[family.id_column] = row_id(family, i)
    row[family.text_column] = f"text of {family.name} row {i}"
    return row


def write_declared_families(data_dir: Path) -> dict[str, list[str]]:
    """Every declared family written in one partition (its quarantine beside it); returns each
    registered or configured dimension's known keys."""
    for family in FAMILIES.values():
        keys = {dim.name: key_of(dim) for dim in family.dims}
        rows = [make_row(family, i) for i in range(ROWS)]
        path = family.path(data_dir, keys)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=family.schema), path)
        if family.quarantine_schema is not None:
            rejected = {f.name: filler(f.type) for f in family.quarantine_schema}
            rejected.update(make_row(family, ROWS), rejected_by=["incorrect: 4 != 5"])
            pq.write_table(
                pa.Table.from_pylist([rejected], schema=family.quarantine_schema),
                family.quarantine_path(data_dir, keys),
            )
    return {dim.name: [key_of(dim)] for f in FAMILIES.values() for dim in f.dims if not dim.values}


def blend_spec_over_every_source(path: Path) -> Path:
    """A one-phase blend named after `path` with every blendable family as a source and enough
    tokens to take every row."""
    sources = []
    for name, family in BLEND_SOURCES.items():
        selection = {dim.selection: [key_of(dim)] for dim in family.dims if dim.values}
        sources.append(
            {
                "name": name,
                "asset": name,
                "selection": selection,
                "quality_tier": "high",
                "share": 1 / len(BLEND_SOURCES),
                "max_epochs": 100,
            }
        )
    phase = {"name": "all", "fraction": 1.0, "sources": sources}
    path.write_text(json.dumps({"name": path.stem, "total_tokens": 2000, "phases": [phase]}))
    return path


@pytest.fixture
def data_root(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    data_dir = tmp_path / "data"
    return data_dir, write_declared_families(data_dir)


def blend_every_source(data_dir: Path, known: dict[str, list[str]], tmp_path: Path):
    """The blend over every source, built and exported as parquet."""
    spec_path = blend_spec_over_every_source(tmp_path / "every.yaml")
    manifest = build_manifest(
        load_blend_spec(spec_path),
        spec_path,
        data_dir,
        known=known,
        tokens=word_tokens(data_dir),
        lookup=lambda asset, partition: {"run_id": None, "data_version": None},
    )
    exports = save_and_export(manifest, data_dir)
    return manifest, pq.read_table(exports.directory / "all").to_pylist()


def test_every_declared_family_traces_from_an_exported_row_to_its_root(data_root, tmp_path):
    data_dir, known = data_root
    _, exported = blend_every_source(data_dir, known, tmp_path)
    assert {r["source_asset"] for r in exported} == set(BLEND_SOURCES)
    # Each source row once (the blend repeats rows over epochs).
    firsts = {(r["source_asset"], r["source_row_id"]): r for r in reversed(exported)}
    assert len(firsts) == ROWS * len(BLEND_SOURCES)
    for exported_row in firsts.values():
        ancestry = trace_row(exported_row["row_id"], data_dir)
        family = BLEND_SOURCES[exported_row["source_asset"]]
        i = int(exported_row["source_row_id"].rsplit("-", 1)[1])  # every id ends in its row
        # Walk the declared chain: every family on it is in the ancestry, as its row i.
        while True:
            traced = ancestry[family.row_label]
            assert traced is not None, (exported_row, family.name)
            if isinstance(traced, list):  # a parent link to several rows (seeds)
                [traced] = traced
            assert traced[family.id_column] == row_id(family, i)
            assert traced[family.text_column] == f"text of {family.name} row {i}"
            if family.is_root:
                break
            link = family.parents[0]  # the primary chain (prismatic rows also link seeds)
            family = link.family
        if exported_row["source_asset"] != "raw_documents":
            assert ancestry["generation_request"]["request_hash"] == "{}"


def test_the_audit_names_each_partition_by_its_own_family(data_root, tmp_path):
    data_dir, known = data_root
    manifest, _ = blend_every_source(data_dir, known, tmp_path)
    rows = audit_rows(manifest, data_dir)
    audited = {(r["stage"], r["partition"]): r for r in rows}
    for family in FAMILIES.values():
        keys = {dim.name: key_of(dim) for dim in family.dims}
        row = audited[(family.name, family.partition_key(keys))]
        assert row["rows"] == ROWS
        if family.quarantine_schema is not None:
            assert "quarantined 1: incorrect=1" in row["detail"]
    # A trace partition is audited as traces of problems, never as a corpus shard.
    traces = audited[("solution_traces", "high_tir|source1")]
    assert traces["rows"] == ROWS and traces["tokens"] == 0
    assert ("math_problems", "source1") in audited
    shard_stages = {"raw_documents", "chunks", "conversations", "filtered_conversations"}
    assert all(p.split("|")[0] == "shard1" for s, p in audited if s in shard_stages)
    assert {r["partition"] for r in rows if r["stage"] == "blend"} == {
        f"all/{name}" for name in BLEND_SOURCES
    }


def test_trace_partitions_are_pinned_under_the_key_dagster_gives_them():
    key = str(MultiPartitionKey({"source": "gsm8k", "mode": "high_tir"}))
    assert upstream_chain("solution_traces", key) == [
        ("math_problems", "gsm8k"),
        ("solution_traces", key),
    ]
    assert upstream_chain("filtered_conversations", "napkin|debate") == [
        ("raw_documents", "napkin"),
        ("chunks", "napkin"),
        ("conversations", "napkin|debate"),
        ("filtered_conversations", "napkin|debate"),
    ]
    longest = upstream_chain("longest_conversations", "napkin")
    assert len({p for a, p in longest if a == "filtered_conversations"}) == len(STYLE_KEYS)
    assert longest[-1] == ("longest_conversations", "napkin")


def test_a_selection_that_does_not_partition_the_source_is_refused(tmp_path):
    spec = tmp_path / "b.yaml"
    source = {
        "name": "qa",
        "asset": "task_qa",
        "selection": {"styles": ["debate"]},
        "quality_tier": "high",
        "share": 1.0,
        "max_epochs": 1,
    }
    phase = {"name": "p", "fraction": 1.0, "sources": [source]}
    spec.write_text(json.dumps({"name": "b", "total_tokens": 10, "phases": [phase]}))
    with pytest.raises(ValueError, match=r"selection\.styles: task_qa is not partitioned by it"):
        load_blend_spec(spec)


def test_declared_paths_are_the_documented_layout(tmp_path):
    """<data_dir>/<asset>/<keys in path order>.parquet, the quarantine beside it; Dagster's
    multi-partition keys (ordered by dimension name) map back to the same keys."""
    traces = FAMILIES["solution_traces"]
    keys = traces.keys(str(MultiPartitionKey({"source": "gsm8k", "mode": "low_tir"})))
    assert traces.path(tmp_path, keys) == tmp_path / "solution_traces/gsm8k/low_tir.parquet"
    assert traces.quarantine_path(tmp_path, keys) == (
        tmp_path / "solution_traces/gsm8k/low_tir.quarantine.parquet"
    )
    assert traces.keys_from_path(traces.path(tmp_path, keys)) == keys
    filtered = FAMILIES["filtered_conversations"]
    assert filtered.path(tmp_path, {"shard": "a", "style": "debate"}) == (
        tmp_path / "filtered_conversations/a/debate.parquet"
    )
    assert FAMILIES["task_qa"].quarantine_path(tmp_path, {"family": "gsm8k"}) == (
        tmp_path / "task_qa/gsm8k.quarantine.parquet"
    )
