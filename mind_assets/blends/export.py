"""Write a blend's mixed data: shuffled parquet shards per phase, sampled deterministically by
the manifest's weights and epochs, every row carrying its source row id. Bucketed, each phase is
written as per-bucket shards ordered short to long (`shard-bNN-MMMMM.parquet`, NN the bucket's
place in the schedule) and `schedule.json` lists each phase's buckets in training order."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from mind_assets.blends.families import BLEND_SOURCES
from mind_assets.blends.manifest import Manifest, ResolvedPhase, ResolvedSource
from mind_assets.lib.buckets import bucket_index, bucket_label
from mind_assets.lib.buckets import schedule as bucket_schedule
from mind_assets.lib.storage import Staging, output_exists, output_sha256, read_output
from mind_assets.lib.tokenizer import TokenCounter
from mind_assets.settings import BlendSettings

EXPORT_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),  # <blend>:<phase>:<n>
        pa.field("blend", pa.string(), nullable=False),
        pa.field("blend_version", pa.string(), nullable=False),  # the manifest version
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


SCHEDULE_FILE = "schedule.json"


@dataclass
class ExportReport:
    directory: Path
    rows: dict[str, int]
    tokens: dict[str, int]
    shards: dict[str, int]
    # per phase, its buckets short to long: bucket, max_tokens, rows, tokens, shards (bucketed)
    schedule: dict[str, list[dict]] = field(default_factory=dict)


def export_bounds(
    manifest: Manifest, options: BlendSettings, length_buckets: Sequence[int]
) -> list[int] | None:
    """The bucket bounds an export shards by: the manifest's schedule when it records one, else
    MIND_LENGTH_BUCKETS when MIND_BLENDS__EXPORT_BUCKET is on; None for an unbucketed export."""
    recorded = [b["max_tokens"] for b in manifest.schedule if b.get("max_tokens") is not None]
    if recorded:
        return recorded
    return list(length_buckets) if options.export_bucket else None


def bucketed_shards(
    rows: list[dict], bounds: Sequence[int], shard_rows: int
) -> tuple[list[tuple[str, list[dict]]], list[dict]]:
    """(shard file name, rows) in training order, short buckets first, and the phase's schedule.
    Rows keep their mixed (shuffled) order within a bucket."""
    by_bucket: list[list[dict]] = [[] for _ in range(len(bounds) + 1)]
    for row in rows:
        by_bucket[bucket_index(row["n_tokens"], bounds)].append(row)
    shards, stages = [], []
    for index, (stage, members) in enumerate(zip(bucket_schedule(bounds), by_bucket, strict=True)):
        names = []
        for n in range(math.ceil(len(members) / shard_rows)):
            names.append(f"shard-b{index:02d}-{n:05d}.parquet")
            shards.append((names[-1], members[n * shard_rows : (n + 1) * shard_rows]))
        stages.append(
            {
                **stage,
                "rows": len(members),
                "tokens": sum(r["n_tokens"] for r in members),
                "shards": names,
            }
        )
    return shards, stages


class ExportError(ValueError):
    """A blend that cannot be exported as its manifest describes; the message names the file."""


def verify_pinned_files(manifest: Manifest, data_dir: Path) -> None:
    """Check every file every phase of the manifest pins, before anything is written: it must
    be there and hold the content the manifest pinned (its sha256). A file rewritten since (a
    regenerated partition) would silently swap the blend's rows, so it stops the export."""
    for phase in manifest.phases:
        for source in phase.sources:
            for f in source.files:
                path = f.resolve(data_dir)
                where = f"phase {phase.name!r} source {source.name!r}"
                if not output_exists(path):
                    raise ExportError(
                        f"{where}: manifest file missing on disk: {path} "
                        "(rematerialize it, or rebuild the blend's manifest)"
                    )
                digest = output_sha256(path)
                if digest != f.sha256:
                    raise ExportError(
                        f"{where}: {path} changed since the manifest was built "
                        f"(manifest sha256 {f.sha256[:12]}..., on disk {digest[:12]}...); "
                        "restore the file, or rebuild the manifest to blend the new data"
                    )


def _source_rows(source: ResolvedSource, count: TokenCounter, data_dir: Path) -> list[dict]:
    """A source's rows (text, ids, token counts) from the files the manifest pinned (checked
    beforehand by `verify_pinned_files`)."""
    family = BLEND_SOURCES[source.asset]
    text_column, id_column = family.text_column, family.id_column
    rows = []
    for f in source.files:
        table = read_output(f.resolve(data_dir), columns=[text_column, id_column])
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
                    "blend_version": manifest.version,
                    "phase": phase.name,
                    "source": source.name,
                    "source_asset": source.asset,
                    "epoch": epoch,
                    **row,
                }
            )
    rng.shuffle(mixed)
    for n, row in enumerate(mixed):
        row["row_id"] = f"{manifest.ref}:{phase.name}:{n}"
    return mixed


def export_blend(
    manifest: Manifest,
    staging: Staging,
    count_tokens: TokenCounter,
    *,
    data_dir: Path,
    options: BlendSettings,
    length_buckets: Sequence[int] = (),
) -> ExportReport:
    """Write `<phase>/` for every phase of the manifest into the export being staged, in shards
    of `options.export_shard_rows`: `shard-NNNNN.parquet` in mixed order, or, bucketed (see
    `export_bounds`), per-bucket shards short to long with `schedule.json`."""
    shard_rows = options.export_shard_rows
    bounds = export_bounds(manifest, options, length_buckets)
    report = ExportReport(staging.directory, {}, {}, {})
    for phase in manifest.phases:
        mixed = mix_phase(manifest, phase, count_tokens, data_dir)
        for row in mixed:
            row["length_bucket"] = (
                bucket_label(bucket_index(row["n_tokens"], bounds), bounds) if bounds else None
            )
        if bounds:
            shards, report.schedule[phase.name] = bucketed_shards(mixed, bounds, shard_rows)
        else:
            count = max(1, math.ceil(len(mixed) / shard_rows))
            shards = [
                (f"shard-{n:05d}.parquet", mixed[n * shard_rows : (n + 1) * shard_rows])
                for n in range(count)
            ]
        for name, part in shards or [("shard-00000.parquet", [])]:
            staging.add_table(
                f"{phase.name}/{name}", pa.Table.from_pylist(part, schema=EXPORT_SCHEMA)
            )
        report.rows[phase.name] = len(mixed)
        report.tokens[phase.name] = sum(r["n_tokens"] for r in mixed)
        report.shards[phase.name] = max(1, len(shards))
    if bounds:
        staging.add_json(
            SCHEDULE_FILE,
            {
                "order": "short_to_long",
                "bounds": bounds,
                "blend_version": manifest.version,
                "phases": report.schedule,
            },
        )
    return report
