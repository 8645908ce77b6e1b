"""A blend as Megatron-LM/NeMo train on it: each phase's rows, in the parquet export's order,
as megatron-core indexed datasets (.bin/.idx) per source, with the blend's tokenizer.

The ids come from the token cache, so nothing is tokenized here. An export in one part writes
one dataset per source (`<phase>/<source>`); an export in several parts (`blends/plan.py`)
writes one per source and part (`<phase>/<source>.NNNNN`) and lists them all in the phase's
data-path file, each weighted by its share of the source's tokens: Megatron blends several
prefixes per source natively, so parts written on different machines are never merged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mind_assets.blends.manifest import Manifest, megatron_prefix, megatron_weights
from mind_assets.blends.plan import PhasePlan
from mind_assets.lib.indexed_dataset import INDEX_VERSION, IndexedDatasetWriter
from mind_assets.lib.storage import ROW_GROUP_ROWS, InvalidNameError, Staging, validate_name
from mind_assets.lib.tokenizer import BlendTokenizer, token_dtype

MEGATRON_DIRNAME = "megatron"  # in an export, beside the parquet phases
TOKENIZER_DIRNAME = "tokenizer"  # the tokenizer the export used, for --tokenizer-model
DATA_PATH_SUFFIX = ".data-path.txt"  # <phase>.data-path.txt: Megatron-LM's --data-args-path
DOCUMENTS_FILE = "documents.parquet"  # <phase>/documents.parquet: document -> blend row
SUMMARY_FILE = "export.json"

DOCUMENTS_SCHEMA = pa.schema(
    [
        pa.field("prefix", pa.string(), nullable=False),
        pa.field("document", pa.int64(), nullable=False),  # index within the prefix's dataset
        pa.field("row_id", pa.string(), nullable=False),  # the parquet export's row id
        pa.field("blend_version", pa.string(), nullable=False),  # the manifest version
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row_id", pa.string(), nullable=False),
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),  # without the end-of-document token
    ]
)


class ExportError(ValueError):
    """A blend that cannot be exported as its manifest describes; the message names the file."""


@dataclass
class MegatronReport:
    directory: Path
    documents: dict[str, int] = field(default_factory=dict)  # per phase
    tokens: dict[str, int] = field(default_factory=dict)  # per phase, eod tokens included
    datasets: dict[str, int] = field(default_factory=dict)  # indexed datasets per phase

    def data_path_file(self, phase: str) -> Path:
        return self.directory / f"{phase}{DATA_PATH_SUFFIX}"


def eod_token_id(tokenizer: BlendTokenizer) -> int:
    """The end-of-document id appended to every document: the tokenizer's eos, which is also
    what Megatron-LM's HuggingFaceTokenizer reports as `eod` for masks and position resets."""
    eos = tokenizer.eos_id
    if eos is None:
        raise ExportError(
            f"tokenizer {tokenizer.name!r} has no eos token (eos_token in its "
            "tokenizer_config.json), so documents cannot be separated"
        )
    return eos


def check_tokenizer(manifest: Manifest, tokenizer: BlendTokenizer) -> None:
    """Refuse to export a manifest with a tokenizer other than the one that counted its tokens:
    by fingerprint, or by name for a manifest from before fingerprints were recorded."""
    if manifest.tokenizer_sha256:
        if tokenizer.fingerprint != manifest.tokenizer_sha256:
            raise ExportError(
                f"blend {manifest.ref}: its manifest counted tokens with {manifest.tokenizer!r} "
                f"(fingerprint {manifest.tokenizer_sha256[:12]}...), but {tokenizer.name!r} "
                f"loads now with fingerprint {tokenizer.fingerprint[:12]}...; export with the "
                "manifest's tokenizer or rebuild the manifest"
            )
    elif tokenizer.name != manifest.tokenizer:
        raise ExportError(
            f"blend {manifest.blend!r}: its manifest counted tokens with {manifest.tokenizer!r}, "
            f"but the configured model is {tokenizer.name!r}; export with that tokenizer or "
            "rebuild the manifest"
        )


def check_megatron_names(manifest: Manifest) -> None:
    """Refuse phase and source names that cannot be data-path prefixes."""
    for phase in manifest.phases:
        for name in (phase.name, *(s.name for s in phase.sources)):
            try:
                # Manifests built before names were checked could hold a space or a '/', which
                # would split or misplace a data-path entry.
                validate_name(name, kind=f"phase {phase.name!r}: name")
            except InvalidNameError as error:
                raise ExportError(f"blend {manifest.blend!r}: {error}") from error


def part_prefix(phase: str, source: str, part: int, parts: int) -> str:
    """The dataset prefix of a source's rows in one part of a phase's export."""
    prefix = megatron_prefix(phase, source)
    return prefix if parts == 1 else f"{prefix}.{part:05d}"


def documents_file(phase: str, part: int, parts: int) -> str:
    return f"{phase}/{DOCUMENTS_FILE}" if parts == 1 else f"{phase}/documents.{part:05d}.parquet"


@dataclass
class _HeldDocuments:
    """The `documents.parquet` rows of one source's dataset in a part, held compact until the
    part ends (numbers, and the source row ids; the strings made from numbers are made as the
    file is written), so a part of a long blend does not hold its documents' strings."""

    positions: list[np.ndarray] = field(default_factory=list)
    files: list[np.ndarray] = field(default_factory=list)
    epochs: list[np.ndarray] = field(default_factory=list)
    n_tokens: list[np.ndarray] = field(default_factory=list)
    source_row_ids: list[pa.Array] = field(default_factory=list)
    count: int = 0
    tokens: int = 0


class MegatronPartWriter:
    """Writes one part of one phase: its rows, in training order, appended to an indexed
    dataset per source as they come (each row one document: its ids, then the eod id), and
    `documents.parquet` mapping every document back to its blend row."""

    def __init__(
        self,
        staging: Staging,
        manifest: Manifest,
        plan: PhasePlan,
        part: int,
        tokenizer: BlendTokenizer,
    ) -> None:
        self.staging = staging
        self.manifest = manifest
        self.plan = plan
        self.part = part
        self.dtype = token_dtype(tokenizer.vocab_size)
        self.eod = eod_token_id(tokenizer)
        self.writers: dict[int, IndexedDatasetWriter] = {}
        self.held: dict[int, _HeldDocuments] = {}

    def prefix(self, source: int) -> str:
        name = self.plan.phase.sources[source].name
        return part_prefix(self.plan.phase.name, name, self.part, len(self.plan.parts))

    def add(self, rows: pa.Table) -> None:
        """Rows of the part in training order (the spilled columns, with `ids`)."""
        sources = rows["source"].to_numpy()
        ids = rows["ids"].combine_chunks()
        offsets = ids.offsets.to_numpy()
        values = ids.values.to_numpy(zero_copy_only=False).astype(self.dtype, copy=False)
        for source in np.unique(sources).tolist():
            writer = self.writers.get(source)
            if writer is None:
                path = self.staging.path(f"{self.prefix(source)}.bin")
                writer = IndexedDatasetWriter(path, self.dtype, self.eod)
                self.writers[source] = writer
            members = np.flatnonzero(sources == source)
            held = self.held.setdefault(source, _HeldDocuments())
            held.tokens += writer.add_documents(values, offsets[members], offsets[members + 1])
            held.count += len(members)
            take = pa.array(members)
            held.positions.append(rows["position"].to_numpy()[members])
            held.files.append(rows["file"].to_numpy()[members])
            held.epochs.append(rows["epoch"].to_numpy()[members])
            held.n_tokens.append(rows["n_tokens"].to_numpy()[members])
            held.source_row_ids.append(rows["source_row_id"].take(take).combine_chunks())

    def _documents(self, source: int) -> Iterator[pa.Table]:
        """The source's documents.parquet rows, in document order, a row group at a time."""
        held = self.held[source]
        prefix, phase = self.prefix(source), self.plan.phase.name
        paths = [f.path for f in self.plan.phase.sources[source].files]
        positions, files, epochs, n_tokens = (
            np.concatenate(a) for a in (held.positions, held.files, held.epochs, held.n_tokens)
        )
        row_ids = pa.chunked_array(held.source_row_ids, pa.string())
        for start in range(0, held.count, ROW_GROUP_ROWS):
            end = min(start + ROW_GROUP_ROWS, held.count)
            yield pa.table(
                {
                    "prefix": pa.array([prefix] * (end - start), pa.string()),
                    "document": pa.array(np.arange(start, end), pa.int64()),
                    "row_id": [
                        self.manifest.row_id(phase, p) for p in positions[start:end].tolist()
                    ],
                    "blend_version": pa.array([self.manifest.version] * (end - start), pa.string()),
                    "source_file": [paths[f] for f in files[start:end].tolist()],
                    "source_row_id": row_ids.slice(start, end - start),
                    "epoch": pa.array(epochs[start:end], pa.int32()),
                    "n_tokens": pa.array(n_tokens[start:end], pa.int32()),
                },
                schema=DOCUMENTS_SCHEMA,
            )

    def finish(self) -> dict[str, Any]:
        """Close every dataset and write the part's documents; the part's receipt."""
        datasets = []
        for source in sorted(self.writers):
            prefix = self.prefix(source)
            self.writers[source].finish(self.staging.path(f"{prefix}.idx"))
            datasets.append(
                {
                    "prefix": prefix,
                    "source": self.plan.phase.sources[source].name,
                    "documents": self.held[source].count,
                    "tokens": self.held[source].tokens,
                }
            )
        phase, parts = self.plan.phase.name, len(self.plan.parts)
        with self.staging.table_writer(
            documents_file(phase, self.part, parts), DOCUMENTS_SCHEMA
        ) as write:
            for source in sorted(self.held):
                for table in self._documents(source):
                    write(table)
        return {"datasets": datasets, "documents": sum(h.count for h in self.held.values())}


def data_path_list(manifest: Manifest, plan: PhasePlan, datasets: list[dict[str, Any]]) -> str:
    """A phase's `--data-path` list: per source, its weight; in several parts, split over its
    parts' datasets by their share of its tokens."""
    if len(plan.parts) == 1:
        return megatron_weights(manifest)[plan.phase.name]
    weights = {s.name: s.weight for s in plan.phase.sources}
    totals: dict[str, int] = {}
    for dataset in datasets:
        totals[dataset["source"]] = totals.get(dataset["source"], 0) + dataset["tokens"]
    entries = [
        f"{weights[d['source']] * d['tokens'] / totals[d['source']]:.6g} {d['prefix']}"
        for d in datasets
        if weights[d["source"]] > 0 and totals[d["source"]]
    ]
    return " ".join(entries)


def finish_megatron(
    staging: Staging,
    manifest: Manifest,
    plans: list[PhasePlan],
    receipts: dict[str, list[dict[str, Any]]],
    tokenizer: BlendTokenizer,
    out_dir: Path,
) -> MegatronReport:
    """What the Megatron export holds besides its parts' datasets: each phase's data-path list,
    the tokenizer and a summary. `receipts`: per phase, its parts' receipts in order."""
    eod = eod_token_id(tokenizer)
    report = MegatronReport(out_dir)
    summary: dict[str, Any] = {
        "blend": manifest.blend,
        "blend_version": manifest.version,
        "spec_sha256": manifest.spec_sha256,
        "manifest_created_at": manifest.created_at,
        "tokenizer": manifest.tokenizer,
        "tokenizer_sha256": tokenizer.fingerprint,
        "tokenizer_dir": TOKENIZER_DIRNAME,
        "eod_token_id": eod,
        "eod_token": tokenizer.id_to_token(eod),
        "dtype": np.dtype(token_dtype(tokenizer.vocab_size)).name,
        "indexed_dataset_version": INDEX_VERSION,  # megatron-core's MMIDIDX index
        "token_rule": "tokens of a dataset = sum of its documents' n_tokens + 1 eod per document",
        "phases": {},
    }
    tokenizer.save(staging.path(TOKENIZER_DIRNAME))
    for plan in plans:
        phase = plan.phase
        datasets = []
        for receipt in receipts[phase.name]:
            datasets += receipt["datasets"]
        order = {s.name: i for i, s in enumerate(phase.sources)}
        datasets.sort(key=lambda d: (order[d["source"]], d["prefix"]))
        weights = {s.name: s.weight for s in phase.sources}
        for dataset in datasets:
            dataset["weight"] = weights[dataset["source"]]
        data_path = f"{phase.name}{DATA_PATH_SUFFIX}"
        staging.add_text(data_path, data_path_list(manifest, plan, datasets) + "\n")
        documents = sum(r["documents"] for r in receipts[phase.name])
        summary["phases"][phase.name] = {
            "data_path": data_path,
            "documents": documents,
            "tokens": sum(d["tokens"] for d in datasets),
            "parts": len(plan.parts),
            "datasets": [
                {k: d[k] for k in ("prefix", "source", "weight", "documents", "tokens")}
                for d in datasets
            ],
        }
        report.documents[phase.name] = documents
        report.tokens[phase.name] = summary["phases"][phase.name]["tokens"]
        report.datasets[phase.name] = len(datasets)
    staging.add_json(SUMMARY_FILE, summary)
    return report
