"""The evidence a checked partition carries: which index (its version, and each benchmark's
fingerprint) its rows were checked against and how many each benchmark removed. It is written
into the parquet file's own metadata, so it travels with every version of the partition, and a
blend manifest copies it per file; a partition without it was never checked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from mind_assets.lib.versions import content_version

RECORD_KEY = b"mind.decontamination"  # in a checked partition's parquet metadata
INDEX_KEY = b"mind.benchmark_index"  # in benchmark_index's own parquet metadata
OFF = "off"  # the index version of rows checked against no benchmark


@dataclass(frozen=True)
class IndexVersion:
    """What an index is: its parameters and, per benchmark, a fingerprint of the parameters and
    of every text it holds. `version` hashes them all: the data version of benchmark_index."""

    version: str
    benchmarks: dict[str, str]  # name -> fingerprint
    params: dict[str, Any]
    splits: dict[str, list[str]] = field(default_factory=dict)  # name -> "<dataset> <split>"
    items: dict[str, int] = field(default_factory=dict)  # name -> items indexed

    @classmethod
    def of(
        cls,
        params: Mapping[str, Any],
        texts: pa.Table,
        splits: Mapping[str, list[str]] | None = None,
    ) -> IndexVersion:
        """The version of an index over `texts` (benchmark, item_id, field, text columns)."""
        digests: dict[str, Any] = {}
        items: dict[str, set[str]] = {}
        canonical = json.dumps(dict(params), sort_keys=True)
        columns = [texts.column(c).to_pylist() for c in ("benchmark", "item_id", "field", "text")]
        for benchmark, item_id, field_name, text in zip(*columns, strict=True):
            if benchmark not in digests:
                digests[benchmark] = hashlib.sha256(canonical.encode())
                items[benchmark] = set()
            digests[benchmark].update(f"{item_id}\x1f{field_name}\x1f{text}\x1e".encode())
            items[benchmark].add(item_id)
        fingerprints = {name: d.hexdigest()[:16] for name, d in digests.items()}
        return cls(
            version=content_version({"params": dict(params), "benchmarks": fingerprints}),
            benchmarks=fingerprints,
            params=dict(params),
            splits={k: list(v) for k, v in (splits or {}).items()},
            items={k: len(v) for k, v in items.items()},
        )

    @classmethod
    def off(cls, params: Mapping[str, Any]) -> IndexVersion:
        return cls(version=OFF, benchmarks={}, params=dict(params))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> IndexVersion:
        return cls(**payload)


@dataclass(frozen=True)
class CheckRecord:
    """What one written partition was checked against, and what that removed."""

    index_version: str
    benchmarks: dict[str, str]  # name -> fingerprint
    checked: int  # rows checked
    removed: dict[str, int]  # benchmark -> rows quarantined for it
    judged: int = 0  # near misses the paraphrase judge was asked about

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> CheckRecord:
        return cls(**payload)

    def missing(self, required: Mapping[str, str]) -> list[str]:
        """Why these rows do not count as checked against `required` (benchmark ->
        fingerprint): one reason per benchmark, empty when they do."""
        reasons = []
        for name, fingerprint in sorted(required.items()):
            had = self.benchmarks.get(name)
            if had is None:
                reasons.append(f"decontamination: never checked against {name}")
            elif had != fingerprint:
                reasons.append(
                    f"decontamination: checked against another {name} index ({had}, now "
                    f"{fingerprint})"
                )
        return reasons


def with_metadata(table: pa.Table, key: bytes, payload: Mapping[str, Any]) -> pa.Table:
    metadata = dict(table.schema.metadata or {})
    metadata[key] = json.dumps(dict(payload), sort_keys=True).encode()
    return table.replace_schema_metadata(metadata)


def with_record(table: pa.Table, record: CheckRecord) -> pa.Table:
    """`table` carrying `record` in its schema metadata (written into the parquet file)."""
    return with_metadata(table, RECORD_KEY, record.to_json())


def read_record(schema: pa.Schema) -> CheckRecord | None:
    """The record a written partition carries (None: it was never checked)."""
    raw = (schema.metadata or {}).get(RECORD_KEY)
    if raw is None:
        return None
    try:
        return CheckRecord.from_json(json.loads(raw))
    except (ValueError, TypeError) as error:
        raise ValueError(f"malformed decontamination record in a partition: {error}") from error


def read_index_version(schema: pa.Schema) -> IndexVersion | None:
    raw = (schema.metadata or {}).get(INDEX_KEY)
    return None if raw is None else IndexVersion.from_json(json.loads(raw))
