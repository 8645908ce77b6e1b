"""The DuckDB metrics store: partition replacement, views, and concurrent writers."""

import multiprocessing

import pyarrow as pa

from mind_assets.metrics.report import format_metrics
from mind_assets.metrics.store import MetricsStore


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


def write_partition_repeatedly(path, shard, times):
    store = MetricsStore(path)
    for _ in range(times):
        store.replace_partition(
            "filter_decisions", {"shard": shard, "style": "debate"}, decisions(shard, "debate", 50)
        )
        store.record_aggregates("filtered_conversations", f"{shard}|debate", {"accepted": 33})


def test_two_partitions_write_concurrently_without_lock_errors(tmp_path):
    path = tmp_path / "metrics.duckdb"
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=write_partition_repeatedly, args=(path, s, 15)) for s in ("a", "b")
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0]
    counts = (
        MetricsStore(path)
        .query("SELECT shard, count(*) AS n FROM filter_decisions GROUP BY shard ORDER BY shard")
        .to_pylist()
    )
    assert counts == [{"shard": "a", "n": 100}, {"shard": "b", "n": 100}]


def test_rematerializing_a_partition_replaces_its_rows(tmp_path):
    store = MetricsStore(tmp_path / "m.duckdb")
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


def test_metrics_report_prints_each_view(tmp_path):
    assert "no metrics yet" in format_metrics(tmp_path)
    store = MetricsStore(tmp_path / "metrics.duckdb")
    store.replace_partition(
        "filter_decisions", {"shard": "s", "style": "debate"}, decisions("s", "debate", 3)
    )
    report = format_metrics(tmp_path)
    assert "== Rejections per rule ==" in report and "truncated" in report


def test_a_store_from_an_earlier_version_gains_new_columns_and_keeps_its_rows(tmp_path):
    import duckdb

    path = tmp_path / "metrics.duckdb"
    with duckdb.connect(str(path)) as old:  # `generations` as written before engine_dtype existed
        old.execute("CREATE TABLE generations (shard VARCHAR, style VARCHAR, model VARCHAR)")
        old.execute("INSERT INTO generations VALUES ('s', 'debate', 'm')")
    store = MetricsStore(path)
    rows = store.query("SELECT shard, model, engine_dtype FROM generations").to_pylist()
    assert rows == [{"shard": "s", "model": "m", "engine_dtype": None}]
