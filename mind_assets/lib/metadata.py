"""What an asset returns: Dagster metadata shared by every asset that writes a parquet file, built
from the written table, the stage's summary and what only the asset knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from dagster import (
    AssetCheckResult,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
)

from mind_assets.lib.report import Markdown, StageSummary, markdown_preview
from mind_assets.lib.storage import sha256_file


def column_schema(schema: pa.Schema) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(
                name=f.name, type=str(f.type), description=None if f.nullable else "required"
            )
            for f in schema
        ]
    )


def parquet_metadata(
    table: pa.Table, path: Path, preview_columns: list[str] | None = None
) -> dict[str, Any]:
    return {
        "dagster/row_count": table.num_rows,
        "dagster/column_schema": column_schema(table.schema),
        "path": MetadataValue.path(str(path)),
        "preview": MetadataValue.md(markdown_preview(table, preview_columns)),
    }


def file_data_version(path: Path) -> DataVersion:
    """The data version of a written partition is the hash of its file."""
    return DataVersion(sha256_file(path)[:24])


def dagster_value(value: Any) -> Any:
    """A summary value as Dagster metadata: markdown, a path, JSON for dicts and lists; numbers,
    strings and Dagster values as they are."""
    if isinstance(value, Markdown):
        return MetadataValue.md(str(value))
    if isinstance(value, Path):
        return MetadataValue.path(str(value))
    # Exactly these types: Dagster's own metadata values (TableSchema, ...) are records that
    # subclass tuple, and pass through as they are.
    if type(value) in (dict, list, tuple):
        return MetadataValue.json(value)
    return value


def stage_result(
    summary: StageSummary, *, data_version: DataVersion | None = None, **extra: Any
) -> MaterializeResult:
    """The MaterializeResult of a stage summary (`extra`: metadata only the asset knows)."""
    metadata = {**summary.metadata, **extra}
    return MaterializeResult(
        metadata={k: dagster_value(v) for k, v in metadata.items()},
        check_results=[
            AssetCheckResult(
                check_name=check.name,
                passed=check.passed,
                metadata={k: dagster_value(v) for k, v in check.metadata.items()},
            )
            for check in summary.checks
        ]
        or None,
        data_version=data_version,
    )


def output_result(
    table: pa.Table,
    path: Path,
    *,
    preview: list[str] | None = None,
    summary: StageSummary | None = None,
    **metadata: Any,
) -> MaterializeResult:
    """The result of an asset that wrote one partition: rows, column schema, path and a preview
    of `table`, the written file's hash as the data version, and the summary's metadata and
    checks plus `metadata` only the asset knows (values converted by `dagster_value`)."""
    return stage_result(
        summary or StageSummary(),
        data_version=file_data_version(path),
        **parquet_metadata(table, path, preview),
        **metadata,
    )
