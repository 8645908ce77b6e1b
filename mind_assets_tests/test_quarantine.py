"""The one accepted/quarantine writer every rejecting stage uses."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mind_assets.lib.outputs import OutputFamily, PartitionDim
from mind_assets.lib.quarantine import (
    QuarantineError,
    rejections_per_rule,
    rule_name,
    write_split,
)
from mind_assets.lib.storage import current_version

SCHEMA = pa.schema([("row_id", pa.string()), ("text", pa.string()), ("n", pa.int32())])
FAMILY = OutputFamily(
    name="things",
    dims=(PartitionDim("shard", selection="shards", dynamic="shards"),),
    schema=SCHEMA,
    id_column="row_id",
    text_column="text",
    quarantine_schema=SCHEMA.append(pa.field("rejected_by", pa.list_(pa.string()))),
)
KEYS = {"shard": "s1"}


def rows(n: int, start: int = 0, **extra) -> list[dict]:
    return [{"row_id": f"r{i}", "text": f"t{i}", "n": i, **extra} for i in range(start, start + n)]


def test_rule_names_and_counts_per_rule():
    assert rule_name("incorrect: 4 != 5") == "incorrect"
    assert rule_name("duplicate") == "duplicate"
    counts = rejections_per_rule(
        [["too_short", "unfaithful: 0.1 < 0.15"], ["too_short", "too_short: again"], None, []]
    )
    # A row rejected by two rules counts for both; one rule listed twice on a row counts once.
    assert counts == {"too_short": 2, "unfaithful": 1}


def test_both_files_are_written_as_versions_at_the_declared_paths_in_the_declared_schemas(
    tmp_path,
):
    # Columns in another order, an extra one and a wider integer: conformed to the declaration.
    accepted = pa.Table.from_pylist([{**r, "extra": 1} for r in rows(3)]).select(
        ["n", "extra", "text", "row_id"]
    )
    quarantine = pa.Table.from_pylist(rows(2, 3, rejected_by=["too_short: 3 < 48"]))
    written = write_split(FAMILY, tmp_path, KEYS, accepted, quarantine)
    assert written.accepted_path == FAMILY.path(tmp_path, KEYS)
    assert written.quarantine_path == FAMILY.quarantine_path(tmp_path, KEYS)
    assert pq.read_schema(written.accepted_path).names == SCHEMA.names
    assert pq.read_table(written.accepted_path).schema.field("n").type == pa.int32()
    assert (
        pq.read_table(written.quarantine_path)["rejected_by"].to_pylist()
        == [["too_short: 3 < 48"]] * 2
    )
    assert (written.accepted, written.quarantined, written.generated) == (3, 2, 5)
    assert written.acceptance_rate == pytest.approx(0.6)
    assert written.per_rule == {"too_short": 2}
    # Versioned: the paths are pointers at immutable version files.
    assert current_version(written.accepted_path) != written.accepted_path


def test_a_quarantined_row_that_names_no_rule_is_refused_and_nothing_is_written(tmp_path):
    quarantine = pa.Table.from_pylist(
        rows(1, rejected_by=["duplicate"]) + rows(1, 1, rejected_by=[])
    )
    with pytest.raises(QuarantineError, match=r"quarantined rows \[1\] name no rule"):
        write_split(FAMILY, tmp_path, KEYS, pa.Table.from_pylist(rows(1, 5)), quarantine)
    assert not FAMILY.path(tmp_path, KEYS).exists()
    assert not FAMILY.quarantine_path(tmp_path, KEYS).exists()


def test_a_partition_that_does_not_fit_the_schema_is_written_as_it_is_for_the_checks(tmp_path):
    # A missing column and a null in a required one: the stage's checks report these (schema,
    # lineage), so the rows are written in their own shape rather than lost to a failed cast.
    required = FAMILY.schema.set(0, pa.field("row_id", pa.string(), nullable=False))
    family = OutputFamily(
        name="strict",
        dims=FAMILY.dims,
        schema=required,
        id_column="row_id",
        text_column="text",
        quarantine_schema=FAMILY.quarantine_schema,
    )
    accepted = pa.Table.from_pylist([{"row_id": None, "text": "t0"}])
    empty = pa.Table.from_pylist([], schema=FAMILY.quarantine_schema)
    written = write_split(family, tmp_path, KEYS, accepted, empty)
    assert pq.read_table(written.accepted_path).to_pylist() == [{"row_id": None, "text": "t0"}]


def test_every_stage_that_quarantines_writes_through_write_split():
    """Filtering, task Q&A, Prismatic and solution traces: no stage writes its own split."""
    import re

    from mind_assets.settings import PROJECT_DIR

    writers = {
        "filtering/assets.py": ["FILTERED_CONVERSATIONS"],
        "task_qa/assets.py": ["TASK_QA", "PRISMATIC_TASK_QA"],
        "math_traces/assets.py": ["SOLUTION_TRACES"],
    }
    for module, families in writers.items():
        source = (PROJECT_DIR / "mind_assets" / module).read_text()
        for family in families:
            assert re.search(rf"write_split\(\s*{family},", source), (module, family)
        assert ".quarantine_path(" not in source, module
