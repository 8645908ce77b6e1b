"""A blend as Megatron-LM/NeMo train on it: each phase's rows, sampled exactly as the parquet
export samples them, tokenized into one megatron-core indexed dataset (.bin/.idx) per source."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mind_assets.blends.export import ExportError, mix_phase
from mind_assets.blends.manifest import Manifest, megatron_prefix, megatron_weights
from mind_assets.lib.storage import InvalidNameError, Staging, validate_name

MEGATRON_DIRNAME = "megatron"  # in an export, beside the parquet phases
TOKENIZER_DIRNAME = "tokenizer"  # the tokenizer the export used, for --tokenizer-model
DATA_PATH_SUFFIX = ".data-path.txt"  # <phase>.data-path.txt: Megatron-LM's --data-args-path
DOCUMENTS_FILE = "documents.parquet"  # <phase>/documents.parquet: document -> blend row
SUMMARY_FILE = "export.json"
ENCODE_BATCH = 256  # rows tokenized per call: bounded memory, still batched for speed

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


@dataclass
class MegatronReport:
    directory: Path
    documents: dict[str, int] = field(default_factory=dict)  # per phase
    tokens: dict[str, int] = field(default_factory=dict)  # per phase, eod tokens included
    datasets: dict[str, int] = field(default_factory=dict)  # indexed datasets per phase

    def data_path_file(self, phase: str) -> Path:
        return self.directory / f"{phase}{DATA_PATH_SUFFIX}"


def _megatron_core() -> tuple[Any, Any, str]:
    """megatron-core's IndexedDatasetBuilder and DType, imported only when exporting."""
    try:
        import importlib.metadata

        with warnings.catch_warnings():
            # megatron.core's package import warns about GPU kernels a data export never uses.
            warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex.*")
            from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    except ImportError as error:
        raise ExportError(
            "the Megatron export needs megatron-core: pip install 'mind-assets[megatron]'"
        ) from error
    return IndexedDatasetBuilder, DType, importlib.metadata.version("megatron-core")


def eod_token_id(tokenizer: Any) -> int:
    """The end-of-document id appended to every document: the tokenizer's eos, which is also
    what Megatron-LM's HuggingFaceTokenizer reports as `eod` for masks and position resets."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ExportError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no eos token "
            "(eos_token in its tokenizer_config.json), so documents cannot be separated"
        )
    return int(eos)


def _encoder(tokenizer: Any):
    def encode(texts: Sequence[str]) -> list[list[int]]:
        # No special tokens: the manifest counted tokens the same way, and the only special
        # token a document gets is its end-of-document id.
        return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []

    return encode


def check_megatron_names(manifest: Manifest, tokenizer_name: str) -> None:
    """Refuse a manifest whose tokens were counted with another tokenizer, or whose phase and
    source names cannot be data-path prefixes."""
    if tokenizer_name != manifest.tokenizer:
        raise ExportError(
            f"blend {manifest.blend!r}: its manifest counted tokens with {manifest.tokenizer!r}, "
            f"but the configured model is {tokenizer_name!r}; export with that tokenizer or "
            "rebuild the manifest"
        )
    for phase in manifest.phases:
        for name in (phase.name, *(s.name for s in phase.sources)):
            try:
                # Manifests built before names were checked could hold a space or a '/', which
                # would split or misplace a data-path entry.
                validate_name(name, kind=f"phase {phase.name!r}: name")
            except InvalidNameError as error:
                raise ExportError(f"blend {manifest.blend!r}: {error}") from error


@dataclass
class _DatasetWriter:
    """Writes one (phase, source) indexed dataset with megatron-core's builder: each row one
    document and one sequence, its tokens then the eod id."""

    builder_class: Any
    dtype: Any
    eod: int
    encode: Any

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encode(texts)]

    def write(self, staging: Staging, prefix: str, rows: list[dict]) -> tuple[int, list[dict]]:
        """(tokens written, one documents.parquet row per document)."""
        builder = self.builder_class(str(staging.path(f"{prefix}.bin")), dtype=self.dtype)
        tokens, documents = 0, []
        for start in range(0, len(rows), ENCODE_BATCH):
            batch = rows[start : start + ENCODE_BATCH]
            ids_per_row = self.encode([r["text"] for r in batch])
            for n, (row, ids) in enumerate(zip(batch, ids_per_row, strict=True), start):
                builder.add_document(np.array([*ids, self.eod], dtype=self.dtype), [len(ids) + 1])
                tokens += len(ids) + 1
                documents.append(
                    {
                        "prefix": prefix,
                        "document": n,
                        "row_id": row["row_id"],
                        "blend_version": row["blend_version"],
                        "source_file": row["source_file"],
                        "source_row_id": row["source_row_id"],
                        "epoch": row["epoch"],
                        "n_tokens": len(ids),
                    }
                )
        builder.finalize(str(staging.path(f"{prefix}.idx")))
        return tokens, documents


def _export_phase(
    manifest: Manifest, phase: Any, writer: _DatasetWriter, staging: Staging, data_dir: Path
) -> dict[str, Any]:
    """One phase: its rows mixed as the parquet export mixes them, an indexed dataset per source
    with weight, `documents.parquet` and the data-path list. Returns the phase's summary."""
    mixed = mix_phase(manifest, phase, writer.count, data_dir)
    documents: list[dict[str, Any]] = []
    datasets = []
    for source in phase.sources:
        if source.weight <= 0:  # left out of the data-path list too
            continue
        prefix = megatron_prefix(phase.name, source.name)
        rows = [r for r in mixed if r["source"] == source.name]
        if not rows:
            raise ExportError(
                f"phase {phase.name!r} source {source.name!r}: weight {source.weight:g} "
                "but no rows to export (are its manifest files empty now?)"
            )
        tokens, written = writer.write(staging, prefix, rows)
        documents += written
        datasets.append(
            {
                "prefix": prefix,
                "source": source.name,
                "weight": source.weight,
                "documents": len(rows),
                "tokens": tokens,
            }
        )
    staging.add_table(
        f"{phase.name}/{DOCUMENTS_FILE}", pa.Table.from_pylist(documents, schema=DOCUMENTS_SCHEMA)
    )
    data_path = f"{phase.name}{DATA_PATH_SUFFIX}"
    staging.add_text(data_path, megatron_weights(manifest)[phase.name] + "\n")
    return {
        "data_path": data_path,
        "documents": len(documents),
        "tokens": sum(d["tokens"] for d in datasets),
        "datasets": datasets,
    }


def export_megatron(
    manifest: Manifest,
    staging: Staging,
    tokenizer: Any,
    *,
    tokenizer_name: str,
    data_dir: Path,
    out_dir: Path,
) -> MegatronReport:
    """Write the Megatron export into `staging` (the export's `megatron/` being built, which
    becomes `out_dir`): `<phase>/<source>.bin/.idx` per source with tokens,
    `<phase>.data-path.txt` (weights and prefixes relative to the directory, the manifest's
    `megatron_weights`), `<phase>/documents.parquet`, the tokenizer and a summary."""
    check_megatron_names(manifest, tokenizer_name)
    builder_class, dtypes, core_version = _megatron_core()
    eod = eod_token_id(tokenizer)
    # Token ids are stored as uint16 when the vocabulary allows, as megatron-core's own
    # preprocessing does; readers take the dtype from the .idx header.
    dtype = dtypes.optimal_dtype(len(tokenizer))
    writer = _DatasetWriter(builder_class, dtype, eod, _encoder(tokenizer))
    report = MegatronReport(out_dir)
    summary: dict[str, Any] = {
        "blend": manifest.blend,
        "blend_version": manifest.version,
        "spec_sha256": manifest.spec_sha256,
        "manifest_created_at": manifest.created_at,
        "tokenizer": manifest.tokenizer,
        "tokenizer_dir": TOKENIZER_DIRNAME,
        "eod_token_id": eod,
        "eod_token": tokenizer.convert_ids_to_tokens(eod),
        "dtype": np.dtype(dtype).name,
        "megatron_core": core_version,
        "token_rule": "tokens of a dataset = sum of its documents' n_tokens + 1 eod per document",
        "phases": {},
    }
    tokenizer.save_pretrained(str(staging.path(TOKENIZER_DIRNAME)))
    for phase in manifest.phases:
        phase_summary = _export_phase(manifest, phase, writer, staging, data_dir)
        summary["phases"][phase.name] = phase_summary
        report.documents[phase.name] = phase_summary["documents"]
        report.tokens[phase.name] = phase_summary["tokens"]
        report.datasets[phase.name] = len(phase_summary["datasets"])
    staging.add_json(SUMMARY_FILE, summary)
    return report
