"""The metrics store: parquet per partition, DuckDB views over it, concurrent writers that never
wait, and metrics.duckdb as a disposable copy that a corrupt file cannot stop."""

import multiprocessing
import threading

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mind_assets.cli import main as mind_cli
from mind_assets.metrics.report import format_metrics
from mind_assets.metrics.store import MetricsStore, metrics_store, table_schema


def decisions(shard, style, n, rejected_every=3):
    rows = []
    for i in range(n):
        for rule in ("truncated", "duplicate"):
            rows.append(
                {
                    "shard": shard,
                    "style": style,
                    "conversation_id": f"{shard}-{i}",
                    "rule": rule,
                    "passed": not (rule == "truncated" and i % rejected_every == 0),
                    "value": float(i),
                }
            )
    return pa.Table.from_pylist(rows)


def write_partition_repeatedly(data_dir, shard, times):
    store = metrics_store(data_dir)
    for _ in range(times):
        store.replace_partition(
            "filter_decisions", {"shard": shard, "style": "debate"}, decisions(shard, "debate", 50)
        )
        store.record_aggregates("filtered_conversations", f"{shard}|debate", {"accepted": 33})


def test_two_partitions_write_concurrently_without_waiting_on_each_other(tmp_path):
    # A DuckDB client holding metrics.duckdb open for writing (DuckDB's own file lock) must not
    # hold anyone up: writers never open that file.
    cache = tmp_path / "metrics.duckdb"
    holder = duckdb.connect(str(cache))
    holder.execute("CREATE TABLE held (x INTEGER)")
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=write_partition_repeatedly, args=(tmp_path, s, 15))
        for s in ("a", "b")
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    holder.close()
    assert [w.exitcode for w in writers] == [0, 0]
    counts = (
        metrics_store(tmp_path)
        .query("SELECT shard, count(*) AS n FROM filter_decisions GROUP BY shard ORDER BY shard")
        .to_pylist()
    )
    assert counts == [{"shard": "a", "n": 100}, {"shard": "b", "n": 100}]
    # No temporary file of any write is left behind.
    assert not [p for p in (tmp_path / "metrics").rglob("*.tmp")]


def test_a_reader_during_writes_sees_whole_partitions_only(tmp_path):
    store = metrics_store(tmp_path)
    key = {"shard": "s", "style": "debate"}
    store.replace_partition("filter_decisions", key, decisions("s", "debate", 40))
    stop = threading.Event()

    def rewrite():
        n = 0
        while not stop.is_set():
            n += 1
            store.replace_partition("filter_decisions", key, decisions("s", "debate", 40 + n % 2))

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        seen = {
            store.query("SELECT count(*) AS n FROM filter_decisions")["n"][0].as_py()
            for _ in range(30)
        }
    finally:
        stop.set()
        writer.join()
    assert seen <= {80, 82}


def test_rematerializing_a_partition_replaces_its_rows(tmp_path):
    store = metrics_store(tmp_path)
    store.replace_partition(
        "filter_decisions", {"shard": "s", "style": "debate"}, decisions("s", "debate", 9)
    )
    store.replace_partition(
        "filter_decisions", {"shard": "s", "style": "debate"}, decisions("s", "debate", 6)
    )
    rejected = store.query("SELECT * FROM rejections_per_rule WHERE rule = 'truncated'").to_pylist()
    assert rejected == [
        {"shard": "s", "style": "debate", "rule": "truncated", "rejected": 2, "evaluated": 6}
    ]
    assert [p.name for p in store.files("filter_decisions")] == ["s__debate.parquet"]


def test_partition_values_with_separators_get_one_file_each(tmp_path):
    store = metrics_store(tmp_path)
    for partition in ("napkin|debate", "napkin/debate", "napkin:debate"):
        store.record_aggregates("filtered_conversations", partition, {"accepted": 1})
    rows = store.query("SELECT partition FROM partition_aggregates ORDER BY partition").to_pylist()
    assert [r["partition"] for r in rows] == ["napkin/debate", "napkin:debate", "napkin|debate"]
    assert len(store.files("partition_aggregates")) == 3
    with pytest.raises(ValueError, match=r"keyed by \('shard', 'style'\)"):
        store.replace_partition("filter_decisions", {"shard": "s"}, decisions("s", "x", 1))


def test_metrics_report_prints_each_view(tmp_path):
    assert "no metrics yet" in format_metrics(tmp_path)
    store = metrics_store(tmp_path)
    store.replace_partition(
        "filter_decisions", {"shard": "s", "style": "debate"}, decisions("s", "debate", 3)
    )
    report = format_metrics(tmp_path)
    assert "== Rejections per rule ==" in report and "truncated" in report


def test_files_from_before_a_column_existed_read_it_as_null(tmp_path):
    store = MetricsStore(tmp_path)
    old = table_schema("generations").remove(
        table_schema("generations").get_field_index("engine_dtype")
    )
    path = store.partition_file("generations", {"shard": "s", "style": "debate"})
    path.parent.mkdir(parents=True)
    row = {name: None for name in old.names} | {"shard": "s", "style": "debate", "model": "m"}
    pq.write_table(pa.Table.from_pylist([row], schema=old), path)
    rows = store.query("SELECT shard, model, engine_dtype FROM generations").to_pylist()
    assert rows == [{"shard": "s", "model": "m", "engine_dtype": None}]


def test_a_corrupt_duckdb_copy_blocks_nothing_and_rebuild_restores_the_counts(
    tmp_path, monkeypatch, capsys, caplog
):
    monkeypatch.setenv("MIND_DATA_DIR", str(tmp_path))
    store = metrics_store(tmp_path)
    for shard in ("a", "b"):
        store.replace_partition(
            "filter_decisions", {"shard": shard, "style": "debate"}, decisions(shard, "debate", 9)
        )
    assert mind_cli(["metrics", "rebuild"]) == 0
    view = "SELECT * FROM rejections_per_rule ORDER BY shard, rule"
    expected = store.query(view).to_pylist()
    with duckdb.connect(str(store.cache_path), read_only=True) as cache:
        assert cache.sql(view).to_arrow_table().to_pylist() == expected

    # A few KB overwritten, as a crash or a bad disk can do.
    with store.cache_path.open("r+b") as damaged:
        damaged.seek(0)
        damaged.write(b"\x00garbage" * 512)
    with pytest.raises(duckdb.Error):
        duckdb.connect(str(store.cache_path)).close()
    # Writes and reports go on: they never open the copy.
    store.replace_partition(
        "filter_decisions", {"shard": "c", "style": "debate"}, decisions("c", "debate", 9)
    )
    assert "== Rejections per rule ==" in format_metrics(tmp_path)
    assert mind_cli(["metrics", "rebuild"]) == 0
    assert "filter_decisions: 54 rows" in capsys.readouterr().out
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("metrics.duckdb.corrupt-")]
    assert len(aside) == 1 and f"moved to {aside[0]}" in caplog.text
    with duckdb.connect(str(store.cache_path), read_only=True) as cache:
        assert cache.sql(view).to_arrow_table().to_pylist() == store.query(view).to_pylist()


def test_a_materialization_runs_with_a_garbage_duckdb_file_in_place(settings, register, instance):
    from dagster import materialize

    from mind_assets.corpus.assets import raw_documents
    from mind_assets.llm.resource import LLMResource
    from mind_assets_tests.conftest import napkin_shard

    garbage = settings.data_dir / "metrics.duckdb"
    garbage.parent.mkdir(parents=True, exist_ok=True)
    garbage.write_bytes(b"\x00not a database" * 400)
    register(napkin_shard("napkin2", 2))
    llm = LLMResource.from_settings(settings)
    assert materialize(
        [raw_documents], partition_key="napkin2", instance=instance, resources={"llm": llm}
    ).success
    rows = metrics_store(settings.data_dir).query("SELECT count(*) AS n FROM documents")
    assert rows["n"][0].as_py() == 2
    assert garbage.read_bytes() == b"\x00not a database" * 400  # untouched until a rebuild


@pytest.mark.parametrize(
    ("table", "family_name", "left_out"),
    [
        ("documents", "raw_documents", {"text"}),
        # character offsets and the tokenizer name are read from the chunks' parquet
        ("chunks", "chunks", {"text", "char_start", "char_end", "tokenizer"}),
        ("generations", "conversations", {"text", "turns", "sampling_params"}),
    ],
)
def test_metrics_tables_mirror_their_output_family(table, family_name, left_out):
    """A metrics table that mirrors a family's rows has the family's columns, minus the text, in
    the family's types: a column added or retyped in the family fails here, not in a query."""
    from mind_assets.blends.families import family

    declared = family(family_name).schema
    metrics = table_schema(table)
    shared = [name for name in metrics.names if name in declared.names]
    assert set(declared.names) - set(shared) == left_out
    for name in shared:
        assert metrics.field(name).type == declared.field(name).type, (table, name)


def test_duckdb_column_types_come_from_the_arrow_schema():
    from mind_assets.metrics.store import TABLES, table_columns

    for table, declared in TABLES.items():
        assert [name for name, _ in table_columns(table)] == declared.schema.names
    assert dict(table_columns("generations"))["created_at"] == "TIMESTAMPTZ"
    assert dict(table_columns("chunks"))["n_tokens"] == "INTEGER"
