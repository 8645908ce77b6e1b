"""Write a blend's mixed data: shuffled parquet shards per phase, sampled deterministically by
the manifest's weights and epochs, every row carrying its source row id."""

from __future__ import annotations

import math
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mind_assets.blends.manifest import Manifest, ResolvedPhase, ResolvedSource
from mind_assets.blends.spec import SOURCE_COLUMNS
from mind_assets.corpus.chunking import TokenCounter
from mind_assets.lib.storage import sha256_file

# Sequence-length buckets (tokens), after Nemotron-Math's bucketed long-context training.
LENGTH_BUCKETS = (512, 1024, 2048, 4096, 8192, 16384)

EXPORT_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),  # <blend>:<phase>:<n>
        pa.field("blend", pa.string(), nullable=False),
        pa.field("phase", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_asset", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row_id", pa.string(), nullable=False),
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("length_bucket", pa.string()),
    ]
)


def length_bucket(tokens: int) -> str:
    for upper in LENGTH_BUCKETS:
        if tokens <= upper:
            return f"<={upper}"
    return f">{LENGTH_BUCKETS[-1]}"


@dataclass
class ExportReport:
    directory: Path
    rows: dict[str, int]
    tokens: dict[str, int]
    shards: dict[str, int]


class ExportError(ValueError):
    """A blend that cannot be exported as its manifest describes; the message names the file."""


def _source_rows(source: ResolvedSource, count: TokenCounter, data_dir: Path) -> list[dict]:
    text_column, id_column = SOURCE_COLUMNS[source.asset]
    rows = []
    for f in source.files:
        path = f.resolve(data_dir)
        if not path.is_file():
            raise ExportError(
                f"source {source.name!r}: manifest file missing on disk: {path} "
                "(rematerialize it, or rebuild the blend's manifest)"
            )
        # The manifest pins each file's content: a file rewritten since (a regenerated
        # partition) would silently swap the blend's rows, so it stops the export instead.
        digest = sha256_file(path)
        if digest != f.sha256:
            raise ExportError(
                f"source {source.name!r}: {path} changed since the manifest was built "
                f"(manifest sha256 {f.sha256[:12]}..., on disk {digest[:12]}...); "
                "restore the file, or rebuild the manifest to blend the new data"
            )
        table = pq.read_table(path, columns=[text_column, id_column])
        texts = [t or "" for t in table[text_column].to_pylist()]
        for text, row_id, n in zip(texts, table[id_column].to_pylist(), count(texts), strict=True):
            rows.append(
                {"text": text, "source_row_id": str(row_id), "source_file": f.path, "n_tokens": n}
            )
    return rows


def sample_source(
    rows: list[dict], target_tokens: float, rng: random.Random
) -> list[tuple[int, dict]]:
    """(epoch, row) pairs: whole passes over the rows while the target allows, then a seeded
    random subset for the fractional rest, so tokens land as close to the target as rows allow."""
    if not rows or target_tokens <= 0:
        return []
    per_pass = sum(r["n_tokens"] for r in rows)
    full_passes = int(target_tokens // per_pass) if per_pass else 0
    picked = [(epoch, row) for epoch in range(full_passes) for row in rows]
    remaining = target_tokens - full_passes * per_pass
    order = list(range(len(rows)))
    rng.shuffle(order)
    for index in order:
        if remaining <= 0:
            break
        picked.append((full_passes, rows[index]))
        remaining -= rows[index]["n_tokens"]
    return picked


def mix_phase(
    manifest: Manifest, phase: ResolvedPhase, count_tokens: TokenCounter, data_dir: Path
) -> list[dict]:
    """A phase's rows in training order, each with its `row_id`: every source sampled by its
    manifest tokens, then shuffled together. Seeded by the manifest alone, so every export
    format of a blend carries the same rows in the same order. `source_file` stays relative to
    the data root `data_dir` the manifest's files resolve against."""
    rng = random.Random(f"{manifest.seed}:{manifest.blend}:{phase.name}")
    mixed = []
    for source in phase.sources:
        for epoch, row in sample_source(
            _source_rows(source, count_tokens, data_dir), source.tokens, rng
        ):
            mixed.append(
                {
                    "blend": manifest.blend,
                    "phase": phase.name,
                    "source": source.name,
                    "source_asset": source.asset,
                    "epoch": epoch,
                    **row,
                }
            )
    rng.shuffle(mixed)
    for n, row in enumerate(mixed):
        row["row_id"] = f"{manifest.blend}:{phase.name}:{n}"
    return mixed


def export_blend(
    manifest: Manifest,
    out_dir: Path,
    count_tokens: TokenCounter,
    *,
    data_dir: Path,
    shard_rows: int = 10_000,
    bucket: bool = False,
) -> ExportReport:
    """Rewrite `out_dir/<phase>/shard-NNNNN.parquet` for every phase of the manifest."""
    report = ExportReport(out_dir, {}, {}, {})
    for phase in manifest.phases:
        mixed = mix_phase(manifest, phase, count_tokens, data_dir)
        for row in mixed:
            row["length_bucket"] = length_bucket(row["n_tokens"]) if bucket else None
        # Shards are written into a staging directory that replaces the phase's directory only
        # once complete, so readers never see a half-exported phase.
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{phase.name}.", dir=out_dir))
        n_shards = max(1, math.ceil(len(mixed) / shard_rows))
        try:
            for shard in range(n_shards):
                part = mixed[shard * shard_rows : (shard + 1) * shard_rows]
                pq.write_table(
                    pa.Table.from_pylist(part, schema=EXPORT_SCHEMA),
                    staging / f"shard-{shard:05d}.parquet",
                    compression="zstd",
                )
            phase_dir = out_dir / phase.name
            if phase_dir.exists():
                shutil.rmtree(phase_dir)
            staging.rename(phase_dir)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        report.rows[phase.name] = len(mixed)
        report.tokens[phase.name] = sum(r["n_tokens"] for r in mixed)
        report.shards[phase.name] = n_shards
    return report
