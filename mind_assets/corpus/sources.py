"""Reading a shard's source rows and turning them into normalized raw-document rows.

Every error names the file (or dataset) and the row, because the person fixing it has to find
that row in a corpus of millions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mind_assets.corpus.normalize import normalize_text
from mind_assets.corpus.schema import RAW_DOCUMENT_SCHEMA
from mind_assets.corpus.shards import ShardSpec
from mind_assets.lib.storage import sha256_text


class CorpusError(ValueError):
    """A corpus row or file that cannot become a raw document."""


@dataclass(frozen=True)
class SourceRow:
    origin: str  # the file path or "hf:<dataset>:<split>"
    row: int  # 0-based row number within the origin
    record: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.origin} row {self.row}"


def _iter_jsonl(path: Path) -> Iterator[SourceRow]:
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise CorpusError(
                    f"{path} row {line_no} (line {line_no + 1}): invalid UTF-8 at byte "
                    f"{error.start} of the line"
                ) from error
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(
                    f"{path} row {line_no} (line {line_no + 1}): invalid JSON: {error.msg}"
                ) from error
            if not isinstance(record, dict):
                raise CorpusError(f"{path} row {line_no}: expected a JSON object per line")
            yield SourceRow(str(path), line_no, record)


def _iter_parquet(path: Path, text_field: str) -> Iterator[SourceRow]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise CorpusError(f"{path}: not a readable parquet file: {error}") from error
    names = parquet.schema_arrow.names
    if text_field not in names:
        raise CorpusError(f"{path}: no {text_field!r} column (columns: {', '.join(names)})")
    row = 0
    for batch in parquet.iter_batches(batch_size=4096):
        # Binary columns are decoded here so invalid UTF-8 is reported with its row.
        columns = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        for i in range(batch.num_rows):
            record = {name: values[i] for name, values in columns.items()}
            for key, value in record.items():
                if isinstance(value, bytes):
                    try:
                        record[key] = value.decode("utf-8")
                    except UnicodeDecodeError as error:
                        raise CorpusError(
                            f"{path} row {row}: column {key!r} is not valid UTF-8 "
                            f"(byte {error.start})"
                        ) from error
            yield SourceRow(str(path), row, record)
            row += 1


def _iter_local(path: Path, text_field: str) -> Iterator[SourceRow]:
    if not path.is_file():
        raise CorpusError(f"corpus file not found: {path}")
    rows = _iter_parquet(path, text_field) if path.suffix == ".parquet" else _iter_jsonl(path)
    empty = True
    for row in rows:
        empty = False
        yield row
    if empty:
        raise CorpusError(f"{path}: the file is empty (no rows)")


def _iter_hf(spec: ShardSpec) -> Iterator[SourceRow]:
    import datasets

    origin = f"hf:{spec.dataset}{'/' + spec.config_name if spec.config_name else ''}:{spec.split}"
    try:
        # Streaming reads only the requested range instead of downloading the whole split.
        stream = datasets.load_dataset(
            spec.dataset, spec.config_name, split=spec.split, streaming=True
        )
    except Exception as error:
        raise CorpusError(f"{origin}: cannot open the dataset: {error}") from error
    if spec.start:
        stream = stream.skip(spec.start)
    if spec.stop is not None:
        stream = stream.take(spec.stop - spec.start)
    for offset, record in enumerate(stream):
        yield SourceRow(origin, spec.start + offset, dict(record))


def iter_source_rows(spec: ShardSpec) -> Iterator[SourceRow]:
    """Every row of the shard, in order, honouring the row range for local files too."""
    if spec.kind == "hf":
        yield from _iter_hf(spec)
        return
    rows = (row for path in spec.paths for row in _iter_local(Path(path), spec.fields.text))
    yield from islice(rows, spec.start, spec.stop)


def _optional_text(row: SourceRow, field: str) -> str | None:
    value = row.record.get(field)
    return None if value is None else str(value)


def to_raw_document(row: SourceRow, spec: ShardSpec) -> dict[str, Any]:
    fields = spec.fields
    if fields.text not in row.record:
        raise CorpusError(
            f"{row.where}: no {fields.text!r} field (fields: {', '.join(map(str, row.record))})"
        )
    raw_text = row.record[fields.text]
    if not isinstance(raw_text, str):
        raise CorpusError(
            f"{row.where}: field {fields.text!r} must be a string, got {type(raw_text).__name__}"
        )
    text = normalize_text(raw_text)
    if not text:
        raise CorpusError(f"{row.where}: empty text in field {fields.text!r}")
    digest = sha256_text(text)
    source_id = _optional_text(row, fields.id)
    return {
        # Without a source id the content hash identifies the document.
        "doc_id": source_id if source_id else digest[:16],
        "source": f"{row.origin}#{row.row}",
        "url": _optional_text(row, fields.url),
        "title": _optional_text(row, fields.title),
        "text": text,
        "n_chars": len(text),
        "sha256": digest,
    }


@dataclass
class ReadReport:
    rows_read: int = 0
    exact_duplicates_dropped: int = 0


def read_raw_documents(spec: ShardSpec) -> tuple[pa.Table, ReadReport]:
    """All documents of a shard as a RAW_DOCUMENT_SCHEMA table.

    Duplicate ids are an error when the source supplies ids; documents whose id is their content
    hash are exact duplicates and are dropped (and counted).
    """
    report = ReadReport()
    documents: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for row in iter_source_rows(spec):
        report.rows_read += 1
        document = to_raw_document(row, spec)
        first = seen.get(document["doc_id"])
        if first is not None:
            if _optional_text(row, spec.fields.id):
                raise CorpusError(
                    f"{row.where}: duplicate {spec.fields.id!r} {document['doc_id']!r} "
                    f"(first seen at {first})"
                )
            report.exact_duplicates_dropped += 1
            continue
        seen[document["doc_id"]] = document["source"]
        documents.append(document)
    if not documents:
        where = spec.dataset if spec.kind == "hf" else ", ".join(map(str, spec.paths))
        raise CorpusError(
            f"shard {spec.name!r}: no rows in {where} within rows {spec.start}:{spec.stop or ''}"
        )
    return pa.Table.from_pylist(documents, schema=RAW_DOCUMENT_SCHEMA), report
