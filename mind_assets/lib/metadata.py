"""Dagster metadata shared by every asset that writes a parquet file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from dagster import DataVersion, MetadataValue, TableColumn, TableSchema

from mind_assets.lib.storage import sha256_file

_PREVIEW_CHARS = 600


def column_schema(schema: pa.Schema) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(
                name=f.name, type=str(f.type), description=None if f.nullable else "required"
            )
            for f in schema
        ]
    )


def markdown_preview(table: pa.Table, columns: list[str] | None = None) -> str:
    """One row as a two-column markdown table, long values cut short."""
    if table.num_rows == 0:
        return "_no rows_"
    row = table.slice(0, 1).to_pylist()[0]
    lines = ["| column | value |", "| --- | --- |"]
    for name in columns or list(row):
        value = str(row.get(name))
        if len(value) > _PREVIEW_CHARS:
            value = value[:_PREVIEW_CHARS] + " …"
        value = value.replace("|", "\\|").replace("\n", "<br>")
        lines.append(f"| {name} | {value} |")
    return "\n".join(lines)


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


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(str(r.get(h, "")) for h in headers) + " |" for r in rows]
    return "\n".join(lines)
