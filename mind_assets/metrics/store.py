"""The DuckDB quality-metrics store: one file, `$MIND_DATA_DIR/metrics.duckdb`.

DuckDB allows one writing process per file. Every connection here is taken under an exclusive
file lock beside the database and held only for one short transaction, so parallel runs and
backfills queue for a few milliseconds instead of failing with lock errors. Each asset replaces
its own partition's rows, so re-materializing a partition never double-counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

# Table name -> (DDL columns, partition key columns).
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "documents": (
        "shard VARCHAR, doc_id VARCHAR, source VARCHAR, url VARCHAR, title VARCHAR, "
        "n_chars BIGINT, sha256 VARCHAR",
        ("shard",),
    ),
    "chunks": (
        "shard VARCHAR, chunk_id VARCHAR, doc_id VARCHAR, chunk_index INTEGER, n_tokens INTEGER",
        ("shard",),
    ),
    "generations": (
        "shard VARCHAR, style VARCHAR, conversation_id VARCHAR, doc_id VARCHAR, chunk_id VARCHAR, "
        "prompt_id VARCHAR, prompt_version VARCHAR, model VARCHAR, engine VARCHAR, "
        "engine_version VARCHAR, engine_dtype VARCHAR, seed BIGINT, prompt_tokens INTEGER, "
        "completion_tokens INTEGER, finish_reason VARCHAR, n_turns INTEGER, "
        "created_at TIMESTAMPTZ, request_hash VARCHAR",
        ("shard", "style"),
    ),
    "filter_decisions": (
        "shard VARCHAR, style VARCHAR, conversation_id VARCHAR, rule VARCHAR, passed BOOLEAN, "
        "value DOUBLE",
        ("shard", "style"),
    ),
    "partition_aggregates": (
        "asset VARCHAR, partition VARCHAR, metric VARCHAR, value DOUBLE, recorded_at TIMESTAMPTZ",
        ("asset", "partition"),
    ),
    # One row per diversity materialization (keyed by run), so scores can be followed over time.
    "diversity_scores": (
        "target VARCHAR, run_id VARCHAR, kind VARCHAR, samples INTEGER, g_vendi DOUBLE, "
        "embedding_vendi DOUBLE, distinct_2 DOUBLE, distinct_3 DOUBLE, feature_config VARCHAR, "
        "recorded_at TIMESTAMPTZ",
        ("target", "run_id"),
    ),
    "trace_verification": (
        "source VARCHAR, mode VARCHAR, problem_id VARCHAR, k INTEGER, n_correct INTEGER, "
        "pass_rate DOUBLE, majority_answer VARCHAR, majority_correct BOOLEAN, tool_calls INTEGER",
        ("source", "mode"),
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
    # pass rate = mean over problems of (correct samples / k), an estimate of pass@1;
    # maj@k = share of problems whose majority answer is correct; pass@k = any sample correct.
    "diversity": """
        SELECT target, kind, samples, round(g_vendi, 3) AS g_vendi,
               round(embedding_vendi, 3) AS embedding_vendi, distinct_2, distinct_3,
               count(*) OVER (PARTITION BY target) AS runs, recorded_at
        FROM diversity_scores
        QUALIFY row_number() OVER (PARTITION BY target ORDER BY recorded_at DESC) = 1
        ORDER BY target""",
    "math_pass_rates": """
        SELECT source, mode, count(*) AS problems, max(k) AS k,
               round(avg(pass_rate), 4) AS mean_pass_rate,
               round(avg(CASE WHEN majority_correct THEN 1 ELSE 0 END), 4) AS maj_at_k,
               round(avg(CASE WHEN n_correct > 0 THEN 1 ELSE 0 END), 4) AS pass_at_k,
               count(*) FILTER (WHERE n_correct = k) AS solved_by_all,
               sum(tool_calls) AS tool_calls
        FROM trace_verification GROUP BY source, mode ORDER BY source, mode""",
}


class MetricsStore:
    def __init__(self, path: Path, lock_timeout_s: float = 300.0) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.lock_timeout_s = lock_timeout_s

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection held under the store's exclusive lock (a writer pool of size one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("w") as lock:
            deadline = time.monotonic() + self.lock_timeout_s
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"metrics store {self.path} stayed locked") from None
                    time.sleep(0.05)
            connection = duckdb.connect(str(self.path))
            try:
                _ensure_schema(connection)
                yield connection
            finally:
                connection.close()

    def replace_partition(self, table: str, partition: dict[str, str], rows: pa.Table) -> None:
        """Delete the partition's earlier rows of `table` and insert `rows`, in one transaction."""
        _, keys = TABLES[table]
        if set(partition) != set(keys):
            raise ValueError(f"{table} is keyed by {keys}, got {sorted(partition)}")
        columns = [c.split()[0] for c in TABLES[table][0].split(", ")]
        with self.connect() as connection:
            connection.execute("BEGIN TRANSACTION")
            where = " AND ".join(f"{k} = ?" for k in keys)
            connection.execute(f"DELETE FROM {table} WHERE {where}", [partition[k] for k in keys])
            if rows.num_rows:
                connection.register("incoming", rows.select(columns))
                connection.execute(f"INSERT INTO {table} SELECT {', '.join(columns)} FROM incoming")
                connection.unregister("incoming")
            connection.execute("COMMIT")

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

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        with self.connect() as connection:
            return connection.execute(sql, params or []).to_arrow_table()


def _ensure_schema(connection: duckdb.DuckDBPyConnection) -> None:
    for name, (columns, _) in TABLES.items():
        connection.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
    # A store written by an earlier version lacks columns added since; add them (nulls for the
    # old rows) rather than failing every insert.
    existing = set(
        connection.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
        ).fetchall()
    )
    for name, (columns, _) in TABLES.items():
        for definition in columns.split(", "):
            if (name, definition.split()[0]) not in existing:
                connection.execute(f"ALTER TABLE {name} ADD COLUMN {definition}")
    for name, sql in VIEWS.items():
        connection.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")


def metrics_store(data_dir: Path) -> MetricsStore:
    return MetricsStore(data_dir / "metrics.duckdb")


def with_partition_columns(table: pa.Table, **columns: str) -> pa.Table:
    """`table` with constant partition columns (e.g. shard) prepended."""
    for position, (name, value) in enumerate(columns.items()):
        table = table.add_column(position, name, pa.array([value] * table.num_rows, pa.string()))
    return table
