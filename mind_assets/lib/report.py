"""What a stage reports about one materialized partition, in plain Python.

Each stage turns its result into a `StageSummary` (metadata values and check outcomes); the asset
hands it to `lib.metadata.stage_result`, the one place that turns it into Dagster's types. So an
asset body is: read, run the stage, write, summarise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

_PREVIEW_CHARS = 600


class Markdown(str):
    """Text the UI renders as markdown (a table, a sample)."""


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageSummary:
    """Metadata values (numbers, strings, `Markdown`, paths, and dicts or lists shown as JSON)
    and asset-check outcomes of one partition."""

    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)


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


def markdown_cell(value: Any) -> str:
    """One table cell: strings as they are, anything else as JSON; pipes escaped and newlines
    folded, so no value can break the table."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table, the first row's keys as headers."""
    if not rows:
        return "_none_"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(markdown_cell(r.get(h, "")) for h in headers) + " |" for r in rows]
    return "\n".join(lines)
