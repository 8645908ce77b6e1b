"""A blend as Megatron-LM/NeMo train on it: each phase's rows, sampled exactly as the parquet
export samples them, tokenized into one megatron-core indexed dataset (.bin/.idx) per source."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mind_assets.blends.export import ExportError, mix_phase
from mind_assets.blends.manifest import Manifest, megatron_prefix, megatron_weights
from mind_assets.lib.storage import InvalidNameError, validate_name

MEGATRON_DIRNAME = "megatron"  # under blend_exports/<blend>/, beside the parquet phases
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


def _replace_dir(staging: Path, final: Path) -> None:
    """Put a complete staging directory in place of `final`; the old copy is moved aside first
    and deleted after, so `final` is at every moment either the old export or the new one."""
    old = staging.with_name(staging.name + ".old")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    if old.exists():
        shutil.rmtree(old)


def export_megatron(
    manifest: Manifest, out_dir: Path, tokenizer: Any, *, tokenizer_name: str, data_dir: Path
) -> MegatronReport:
    """Rewrite `out_dir` (normally `blend_exports/<blend>/megatron`): `<phase>/<source>.bin/.idx`
    per source with tokens, `<phase>.data-path.txt` (weights and prefixes relative to `out_dir`,
    the manifest's `megatron_weights`), `<phase>/documents.parquet`, the tokenizer and a summary.
    """
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
    builder_class, dtypes, core_version = _megatron_core()
    eod = eod_token_id(tokenizer)
    # Token ids are stored as uint16 when the vocabulary allows, as megatron-core's own
    # preprocessing does; readers take the dtype from the .idx header.
    dtype = dtypes.optimal_dtype(len(tokenizer))
    encode = _encoder(tokenizer)

    def count(texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in encode(texts)]

    lists = megatron_weights(manifest)
    report = MegatronReport(out_dir)
    summary: dict[str, Any] = {
        "blend": manifest.blend,
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
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Everything is written into a staging directory that replaces the export only once
    # complete, so a trainer never sees a list naming a half-written dataset.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tokenizer.save_pretrained(str(staging / TOKENIZER_DIRNAME))
        for phase in manifest.phases:
            mixed = mix_phase(manifest, phase, count, data_dir)
            (staging / phase.name).mkdir()
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
                builder = builder_class(str(staging / f"{prefix}.bin"), dtype=dtype)
                tokens = 0
                for start in range(0, len(rows), ENCODE_BATCH):
                    batch = rows[start : start + ENCODE_BATCH]
                    texts = [r["text"] for r in batch]
                    for n, (row, ids) in enumerate(zip(batch, encode(texts), strict=True), start):
                        # One document, one sequence: its tokens then the eod id.
                        builder.add_document(np.array([*ids, eod], dtype=dtype), [len(ids) + 1])
                        tokens += len(ids) + 1
                        documents.append(
                            {
                                "prefix": prefix,
                                "document": n,
                                "row_id": row["row_id"],
                                "source_file": row["source_file"],
                                "source_row_id": row["source_row_id"],
                                "epoch": row["epoch"],
                                "n_tokens": len(ids),
                            }
                        )
                builder.finalize(str(staging / f"{prefix}.idx"))
                datasets.append(
                    {
                        "prefix": prefix,
                        "source": source.name,
                        "weight": source.weight,
                        "documents": len(rows),
                        "tokens": tokens,
                    }
                )
            pq.write_table(
                pa.Table.from_pylist(documents, schema=DOCUMENTS_SCHEMA),
                staging / phase.name / DOCUMENTS_FILE,
                compression="zstd",
            )
            (staging / f"{phase.name}{DATA_PATH_SUFFIX}").write_text(lists[phase.name] + "\n")
            summary["phases"][phase.name] = {
                "data_path": f"{phase.name}{DATA_PATH_SUFFIX}",
                "documents": len(documents),
                "tokens": sum(d["tokens"] for d in datasets),
                "datasets": datasets,
            }
            report.documents[phase.name] = len(documents)
            report.tokens[phase.name] = summary["phases"][phase.name]["tokens"]
            report.datasets[phase.name] = len(datasets)
        (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        _replace_dir(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return report
