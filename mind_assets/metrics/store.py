"""Quality metrics as data, DuckDB as the lens.

Each materialization writes its partition's metric rows as one parquet file under
`$MIND_DATA_DIR/metrics/<table>/` (temporary file, then an atomic rename that replaces the
partition's earlier file), so re-materializing never double-counts, concurrent runs never wait
on a writer lock, and no single damaged file can stop a write. Queries run in an in-memory DuckDB
whose tables are views over those files (`read_parquet`), with the report views on top.

`metrics.duckdb` beside them is only a disposable copy for DuckDB clients: `mind metrics rebuild`
writes it from the parquet files, moving a corrupt one aside; nothing else opens it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pyarrow as pa

from mind_assets.lib.storage import (
    list_outputs,
    local_file_build,
    local_file_exists,
    metrics_cache_file,
    metrics_dir,
    set_aside,
    write_parquet_version,
)

log = logging.getLogger(__name__)

S = pa.string()
I32 = pa.int32()
I64 = pa.int64()
F64 = pa.float64()
UTC_TIME = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class MetricsTable:
    """One metrics table: its Arrow schema (the one definition: the parquet files are written in
    it and the DuckDB column types are generated from it) and the columns one file is keyed by.
    Columns that mirror an output family's rows keep that family's types (a test holds them)."""

    schema: pa.Schema
    keys: tuple[str, ...]


def _table(keys: tuple[str, ...], *columns: tuple[str, pa.DataType]) -> MetricsTable:
    return MetricsTable(pa.schema(list(columns)), keys)


TABLES: dict[str, MetricsTable] = {
    # raw_documents without the text
    "documents": _table(
        ("shard",),
        ("shard", S),
        ("doc_id", S),
        ("source", S),
        ("url", S),
        ("title", S),
        ("n_chars", I64),
        ("sha256", S),
    ),
    # chunks without the text
    "chunks": _table(
        ("shard",),
        ("shard", S),
        ("chunk_id", S),
        ("doc_id", S),
        ("chunk_index", I32),
        ("n_tokens", I32),
    ),
    # conversations without the text and turns
    "generations": _table(
        ("shard", "style"),
        ("shard", S),
        ("style", S),
        ("conversation_id", S),
        ("doc_id", S),
        ("chunk_id", S),
        ("prompt_id", S),
        ("prompt_version", S),
        ("model", S),
        ("engine", S),
        ("engine_version", S),
        ("engine_dtype", S),
        ("seed", I64),
        ("prompt_tokens", I32),
        ("completion_tokens", I32),
        ("finish_reason", S),
        ("n_turns", I32),
        ("created_at", UTC_TIME),
        ("request_hash", S),
    ),
    "filter_decisions": _table(
        ("shard", "style"),
        ("shard", S),
        ("style", S),
        ("conversation_id", S),
        ("rule", S),
        ("passed", pa.bool_()),
        ("value", F64),
    ),
    "partition_aggregates": _table(
        ("asset", "partition"),
        ("asset", S),
        ("partition", S),
        ("metric", S),
        ("value", F64),
        ("recorded_at", UTC_TIME),
    ),
    # One row per diversity materialization (keyed by run), so scores can be followed over time.
    "diversity_scores": _table(
        ("target", "run_id"),
        ("target", S),
        ("run_id", S),
        ("kind", S),
        ("samples", I32),
        ("g_vendi", F64),
        ("embedding_vendi", F64),
        ("distinct_2", F64),
        ("distinct_3", F64),
        ("feature_config", S),
        ("recorded_at", UTC_TIME),
    ),
    # One row per Prismatic round of a family (round 0: the seeds), replaced on each run.
    "prismatic_rounds": _table(
        ("family",),
        ("family", S),
        ("run_id", S),
        ("round", I32),
        ("pool", I32),
        ("clusters", I32),
        ("new_items", I32),
        ("kept_by_filter", I32),
        ("verified", I32),
        ("kept", I32),
        ("pool_after", I32),
        ("g_vendi_pool", F64),
        ("g_vendi_kept", F64),
        ("g_vendi_new", F64),
        ("recorded_at", UTC_TIME),
    ),
    # Per checked partition and benchmark: rows checked and rows the benchmark's items removed.
    "decontamination": _table(
        ("asset", "partition"),
        ("asset", S),
        ("partition", S),
        ("benchmark", S),
        ("index_version", S),
        ("checked", I64),
        ("removed", I64),
        ("recorded_at", UTC_TIME),
    ),
    "trace_verification": _table(
        ("source", "mode"),
        ("source", S),
        ("mode", S),
        ("problem_id", S),
        ("k", I32),
        ("n_correct", I32),
        ("pass_rate", F64),
        ("majority_answer", S),
        ("majority_correct", pa.bool_()),
        ("tool_calls", I32),
    ),
}

VIEWS: dict[str, str] = {
    "conversation_outcomes": """
        SELECT shard, style, conversation_id, bool_and(passed) AS accepted,
               list(rule ORDER BY rule) FILTER (WHERE NOT passed) AS rejected_by
        FROM filter_decisions GROUP BY shard, style, conversation_id""",
    "acceptance": """
        SELECT g.shard, g.style, count(*) AS generated,
               count(*) FILTER (WHERE o.accepted) AS accepted,
               count(*) FILTER (WHERE NOT o.accepted) AS rejected,
               round(count(*) FILTER (WHERE o.accepted) / count(*), 3) AS acceptance_rate,
               sum(g.completion_tokens) AS tokens_generated,
               coalesce(sum(g.completion_tokens) FILTER (WHERE o.accepted), 0) AS tokens_kept
        FROM generations g JOIN conversation_outcomes o USING (shard, style, conversation_id)
        GROUP BY g.shard, g.style ORDER BY g.shard, g.style""",
    "rejections_per_rule": """
        SELECT shard, style, rule, count(*) FILTER (WHERE NOT passed) AS rejected,
               count(*) AS evaluated
        FROM filter_decisions GROUP BY shard, style, rule
        ORDER BY shard, style, rejected DESC, rule""",
    "conversation_lengths": """
        SELECT shard, style, count(*) AS conversations,
               round(avg(completion_tokens), 1) AS mean_tokens,
               quantile_cont(completion_tokens, 0.5) AS p50_tokens,
               quantile_cont(completion_tokens, 0.9) AS p90_tokens,
               round(avg(n_turns), 2) AS mean_turns,
               count(*) FILTER (WHERE n_turns < 2) AS turns_0_1,
               count(*) FILTER (WHERE n_turns BETWEEN 2 AND 5) AS turns_2_5,
               count(*) FILTER (WHERE n_turns BETWEEN 6 AND 10) AS turns_6_10,
               count(*) FILTER (WHERE n_turns > 10) AS turns_11_plus
        FROM generations GROUP BY shard, style ORDER BY shard, style""",
    # What each partition's latest materialization cost (llm/usage.py): tokens, engine and
    # device seconds, and dollars where the model has a price in MIND_PRICES.
    "cost_per_partition": """
        SELECT asset, partition,
               max(value) FILTER (WHERE metric = 'usage/requests') AS requests,
               max(value) FILTER (WHERE metric = 'usage/prompt_tokens') AS prompt_tokens,
               max(value) FILTER (WHERE metric = 'usage/completion_tokens') AS completion_tokens,
               max(value) FILTER (WHERE metric = 'usage/engine_seconds') AS engine_seconds,
               max(value) FILTER (WHERE metric = 'usage/device_seconds') AS device_seconds,
               max(value) FILTER (WHERE metric = 'usage/dollars') AS dollars,
               max(recorded_at) AS recorded_at
        FROM partition_aggregates WHERE metric LIKE 'usage/%'
        GROUP BY asset, partition ORDER BY asset, partition""",
    # pass rate = mean over problems of (correct samples / k), an estimate of pass@1;
    # maj@k = share of problems whose majority answer is correct; pass@k = any sample correct.
    "diversity": """
        SELECT target, kind, samples, round(g_vendi, 3) AS g_vendi,
               round(embedding_vendi, 3) AS embedding_vendi, distinct_2, distinct_3,
               count(*) OVER (PARTITION BY target) AS runs, recorded_at
        FROM diversity_scores
        QUALIFY row_number() OVER (PARTITION BY target ORDER BY recorded_at DESC) = 1
        ORDER BY target""",
    "prismatic": """
        SELECT family, round, pool, clusters, new_items, kept_by_filter, verified, kept,
               pool_after, round(g_vendi_pool, 3) AS g_vendi_pool,
               round(g_vendi_kept, 3) AS g_vendi_kept, round(g_vendi_new, 3) AS g_vendi_new
        FROM prismatic_rounds ORDER BY family, round""",
    # Rows each benchmark removed, per asset, over the latest check of every partition.
    "decontamination_removals": """
        SELECT benchmark, asset, count(*) AS partitions, sum(checked) AS checked,
               sum(removed) AS removed, string_agg(DISTINCT index_version, ',') AS index_versions
        FROM decontamination GROUP BY benchmark, asset ORDER BY benchmark, asset""",
    "math_pass_rates": """
        SELECT source, mode, count(*) AS problems, max(k) AS k,
               round(avg(pass_rate), 4) AS mean_pass_rate,
               round(avg(CASE WHEN majority_correct THEN 1 ELSE 0 END), 4) AS maj_at_k,
               round(avg(CASE WHEN n_correct > 0 THEN 1 ELSE 0 END), 4) AS pass_at_k,
               count(*) FILTER (WHERE n_correct = k) AS solved_by_all,
               sum(tool_calls) AS tool_calls
        FROM trace_verification GROUP BY source, mode ORDER BY source, mode""",
}


# DuckDB's name for each Arrow type the tables use (the only types they may use).
_DUCKDB_TYPES = {
    S: "VARCHAR",
    I64: "BIGINT",
    I32: "INTEGER",
    F64: "DOUBLE",
    pa.bool_(): "BOOLEAN",
    UTC_TIME: "TIMESTAMPTZ",
}


def duckdb_type(arrow_type: pa.DataType) -> str:
    try:
        return _DUCKDB_TYPES[arrow_type]
    except KeyError:
        raise TypeError(f"metrics tables have no DuckDB type for {arrow_type}") from None


def table_columns(table: str) -> list[tuple[str, str]]:
    """(column, DuckDB type) pairs of a metrics table, in order, generated from its schema."""
    return [(f.name, duckdb_type(f.type)) for f in TABLES[table].schema]


def table_schema(table: str) -> pa.Schema:
    return TABLES[table].schema


class MetricsStore:
    """The metrics of one data root: `root` holds one directory of parquet files per table."""

    def __init__(self, data_dir: Path) -> None:
        self.root = metrics_dir(data_dir)
        self.cache_path = metrics_cache_file(data_dir)

    def has_metrics(self) -> bool:
        return any(self.files(table) for table in TABLES)

    def partition_file(self, table: str, partition: dict[str, str]) -> Path:
        keys = TABLES[table].keys
        if set(partition) != set(keys):
            raise ValueError(f"{table} is keyed by {keys}, got {sorted(partition)}")
        # Partition values hold '|' and ':' (and could hold '/'): quoted, one readable file name.
        name = "__".join(quote(str(partition[k]), safe="") for k in keys)
        return self.root / table / f"{name}.parquet"

    def files(self, table: str) -> list[Path]:
        """The current version of each partition of `table` (under an object store, the
        partitions every process wrote, pulled); writes in flight and versions are never read."""
        return list_outputs(self.root / table, "*.parquet")

    def replace_partition(self, table: str, partition: dict[str, str], rows: pa.Table) -> None:
        """Replace the partition's rows of `table` with `rows` (one file, renamed into place)."""
        path = self.partition_file(table, partition)
        schema = table_schema(table)
        write_parquet_version(rows.select(schema.names).cast(schema), path)

    def record_aggregates(self, asset: str, partition: str, metrics: dict[str, float]) -> None:
        now = datetime.now(UTC)
        rows = pa.table(
            {
                "asset": [asset] * len(metrics),
                "partition": [partition] * len(metrics),
                "metric": list(metrics),
                "value": [float(v) for v in metrics.values()],
                "recorded_at": pa.array([now] * len(metrics), pa.timestamp("us", tz="UTC")),
            }
        )
        self.replace_partition(
            "partition_aggregates", {"asset": asset, "partition": partition}, rows
        )

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with every metrics table as a view over its parquet files."""
        connection = duckdb.connect()
        for table in TABLES:
            connection.execute(f"CREATE VIEW {table} AS {self._select(connection, table)}")
        for name, sql in VIEWS.items():
            connection.execute(f"CREATE VIEW {name} AS {sql}")
        return connection

    def _select(self, connection: duckdb.DuckDBPyConnection, table: str) -> str:
        columns = table_columns(table)
        files = self.files(table)
        if not files:
            nulls = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in columns)
            return f"SELECT {nulls} WHERE false"
        listing = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
        source = f"read_parquet({listing}, union_by_name = true)"
        present = {
            row[0] for row in connection.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        }
        # Files written before a column existed read it as null.
        select = ", ".join(
            name if name in present else f"CAST(NULL AS {kind}) AS {name}" for name, kind in columns
        )
        return f"SELECT {select} FROM {source}"

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        connection = self.connect()
        try:
            return connection.sql(sql, params=params or None).to_arrow_table()
        finally:
            connection.close()

    def rebuild_cache(self) -> dict[str, int]:
        """Write `metrics.duckdb` (tables copied from the parquet files, and the report views)
        for DuckDB clients; a file there that DuckDB cannot open is moved aside first. Returns
        the rows per table."""
        if local_file_exists(self.cache_path):
            try:
                duckdb.connect(str(self.cache_path)).close()
            except duckdb.Error as error:
                aside = set_aside(self.cache_path, f"corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S}")
                log.warning(
                    "metrics cache %s is unreadable (%s); moved to %s",
                    self.cache_path,
                    error,
                    aside,
                )
        counts: dict[str, int] = {}
        # The cache is a local copy for DuckDB clients: never uploaded to an object store.
        with local_file_build(self.cache_path) as tmp:
            source = self.connect()
            try:
                source.execute(f"ATTACH '{tmp}' AS cache")
                for table in TABLES:
                    source.execute(f"CREATE TABLE cache.{table} AS SELECT * FROM {table}")
                    counts[table] = source.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                source.execute("DETACH cache")
            finally:
                source.close()
            with duckdb.connect(str(tmp)) as cache:
                for name, sql in VIEWS.items():
                    cache.execute(f"CREATE VIEW {name} AS {sql}")
        return counts


def metrics_store(data_dir: Path) -> MetricsStore:
    return MetricsStore(data_dir)


def with_partition_columns(table: pa.Table, **columns: str) -> pa.Table:
    """`table` with constant partition columns (e.g. shard) prepended."""
    for position, (name, value) in enumerate(columns.items()):
        table = table.add_column(position, name, pa.array([value] * table.num_rows, pa.string()))
    return table
