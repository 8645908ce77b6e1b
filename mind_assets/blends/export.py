"""Write a blend's mixed data in one streaming pass: parquet shards per phase (every row carrying
its source row id) and, asked for, the Megatron datasets, from the same rows in the same order.

A part of a phase (`blends/plan.py`) is written like this: its rows are gathered source file by
source file, each file read once in bounded batches with its token ids from the token cache,
and spilled to scratch buckets by their place in the training order (`lib/spill.py`); then
each bucket is read back in order and written out, as a parquet shard and as documents of the
Megatron datasets. Memory holds a batch and a shard, never a phase. Bucketed, each phase is
written as per-bucket shards ordered short to long (`shard-bNN-MMMMM.parquet`, NN the bucket's
place in the schedule) and `schedule.json` lists each phase's buckets in training order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mind_assets.blends.families import BLEND_SOURCES
from mind_assets.blends.manifest import Manifest, ResolvedFile, counted_files
from mind_assets.blends.megatron import ExportError, MegatronPartWriter
from mind_assets.blends.plan import PhasePlan, bucket_of, bucket_shard_starts, plan_phase
from mind_assets.blends.tokens import CountedFile, TokenCache
from mind_assets.lib.buckets import bucket_label
from mind_assets.lib.buckets import schedule as bucket_schedule
from mind_assets.lib.progress import Progress
from mind_assets.lib.spill import Spill
from mind_assets.lib.storage import (
    Staging,
    iter_output_batches,
    output_exists,
    output_sha256,
    read_output,
    scratch_dir,
)
from mind_assets.lib.tokenizer import token_dtype
from mind_assets.settings import BlendSettings

__all__ = ["ExportError"]

EXPORT_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),  # <blend>@<version>:<phase>:<n>
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
SCAN_BATCH = 4096  # source rows read at a time


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


@dataclass
class ExportJob:
    """What every part of one export shares: the manifest, its plans and how to write them."""

    manifest: Manifest
    data_dir: Path
    options: BlendSettings
    bounds: list[int] | None
    formats: tuple[str, ...]
    tokens: TokenCache
    plans: list[PhasePlan]

    def counted_file(self, resolved: ResolvedFile) -> CountedFile:
        text_column = BLEND_SOURCES[resolved.asset].text_column
        return CountedFile(resolved.resolve(self.data_dir), resolved.sha256, text_column)

    def parts(self) -> list[tuple[int, int]]:
        """(phase index, part index) of every part, phase by phase."""
        return [(p, k) for p, plan in enumerate(self.plans) for k in range(len(plan.parts))]


def plan_export(
    manifest: Manifest,
    data_dir: Path,
    options: BlendSettings,
    length_buckets: Sequence[int],
    formats: Sequence[str],
    tokens: TokenCache,
) -> ExportJob:
    """Every phase planned from the token cache (filled for files it does not hold yet)."""
    job = ExportJob(
        manifest,
        data_dir,
        options,
        export_bounds(manifest, options, length_buckets),
        tuple(formats),
        tokens,
        [],
    )
    tokens.totals(counted_files(manifest.phases, data_dir))  # encodes what is not cached yet
    for phase in manifest.phases:
        plan = plan_phase(
            manifest,
            phase,
            lambda f: tokens.counts(job.counted_file(f)),
            part_rows=options.export_part_rows,
            shard_rows=options.export_shard_rows,
        )
        for index, source in enumerate(phase.sources):
            if source.weight > 0 and not np.any(plan.source == index):
                raise ExportError(
                    f"phase {phase.name!r} source {source.name!r}: weight {source.weight:g} "
                    "but no rows to export (are its manifest files empty now?)"
                )
        job.plans.append(plan)
    return job


def _spill_schema(job: ExportJob, with_ids: bool) -> pa.Schema:
    fields = [
        pa.field("position", pa.int64(), nullable=False),
        pa.field("source", pa.int32(), nullable=False),
        pa.field("file", pa.int32(), nullable=False),
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("source_row_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
    if with_ids:
        dtype = token_dtype(job.tokens.tokenizer.vocab_size)
        fields.append(pa.field("ids", pa.list_(pa.from_numpy_dtype(dtype)), nullable=False))
    return pa.schema(fields)


def _gather(job: ExportJob, plan: PhasePlan, part: int, spill: Spill, with_ids: bool) -> None:
    """Every row of the part into the spill, each source file read once, in batches (its text
    only for a parquet export, its cached ids only for a Megatron one)."""
    with_text = "parquet" in job.formats
    start, end = plan.parts[part]
    shard_rows = job.options.export_shard_rows
    source, file, row = (a[start:end] for a in (plan.source, plan.file, plan.row))
    order = np.lexsort((row, file, source))
    keys = source[order] * (1 << 32) + file[order]
    cuts = [0, *(np.flatnonzero(np.diff(keys)) + 1).tolist(), len(order)]
    for lo, hi in itertools.pairwise(cuts):
        if lo == hi:
            continue
        members = order[lo:hi]  # offsets into the part, by row within one file
        s, f = int(source[members[0]]), int(file[members[0]])
        counted = job.counted_file(plan.phase.sources[s].files[f])
        id_column = BLEND_SOURCES[plan.phase.sources[s].asset].id_column
        for offset, rows, ids in _aligned_batches(job, counted, id_column, with_ids):
            wanted = row[members]
            first, last = np.searchsorted(wanted, [offset, offset + rows.num_rows])
            if first == last:
                if offset > wanted[-1]:
                    break
                continue
            picked = members[first:last]
            take = pa.array(wanted[first:last] - offset)
            columns: dict[str, Any] = {
                "position": pa.array(picked + start, pa.int64()),
                "source": pa.array(np.full(len(picked), s), pa.int32()),
                "file": pa.array(np.full(len(picked), f), pa.int32()),
                "epoch": pa.array(plan.epoch[start:end][picked], pa.int32()),
                "n_tokens": pa.array(plan.n_tokens[start:end][picked], pa.int32()),
                "source_row_id": pc.cast(rows[id_column].take(take), pa.string()),
                "text": (
                    pc.fill_null(rows[counted.text_column].take(take), "")
                    if with_text
                    else pa.array([""] * len(picked), pa.string())
                ),
            }
            if ids is not None:
                cached = ids["n_tokens"].take(take).to_numpy()
                if not np.array_equal(cached, plan.n_tokens[start:end][picked]):
                    raise ExportError(
                        f"{counted.path}: its token cache disagrees with the counts the plan "
                        "was made from; delete the blend's token cache and export again"
                    )
                columns["ids"] = ids["ids"].take(take)
            spill.add((picked // shard_rows).astype(np.int64), pa.table(columns))


def _aligned_batches(
    job: ExportJob, counted: CountedFile, id_column: str, with_ids: bool
) -> Iterator[tuple[int, pa.Table, pa.Table | None]]:
    """(first row, rows, cached ids) of a source file, `SCAN_BATCH` rows at a time."""
    rows = iter_output_batches(counted.path, [counted.text_column, id_column], SCAN_BATCH)
    ids = job.tokens.batches(counted, SCAN_BATCH) if with_ids else itertools.repeat(None)
    offset = 0
    for batch, cached in zip(rows, ids, strict=False):
        yield offset, batch, cached
        offset += batch.num_rows


class ParquetPartWriter:
    """Writes one part's rows as parquet shards: in training order, or per length bucket."""

    def __init__(self, staging: Staging, job: ExportJob, plan: PhasePlan, part: int) -> None:
        self.staging = staging
        self.job = job
        self.plan = plan
        self.part = part
        self.shard_rows = job.options.export_shard_rows
        self.shards: list[str] = []
        self.rows = 0
        self.tokens = 0
        bounds = job.bounds or []
        self.held: list[list[pa.Table]] = [[] for _ in range(len(bounds) + 1)]
        self.buckets = [{"rows": 0, "tokens": 0, "shards": []} for _ in range(len(bounds) + 1)]
        self.next_shard = (
            bucket_shard_starts(plan, bounds, self.shard_rows)[part].tolist() if bounds else []
        )

    def add(self, table: pa.Table, shard: int) -> None:
        """Export rows (EXPORT_SCHEMA) of consecutive positions in training order: the whole
        of shard number `shard` of the phase, unless the export is bucketed."""
        self.rows += table.num_rows
        self.tokens += int(pc.sum(table["n_tokens"]).as_py() or 0)
        if self.job.bounds is None:
            self._write(f"shard-{shard:05d}.parquet", table)
            return
        bucket_index = bucket_of(table["n_tokens"].to_numpy(), self.job.bounds)
        for bucket in np.unique(bucket_index).tolist():
            members = table.take(pa.array(np.flatnonzero(bucket_index == bucket)))
            self.buckets[bucket]["rows"] += members.num_rows
            self.buckets[bucket]["tokens"] += int(pc.sum(members["n_tokens"]).as_py() or 0)
            self.held[bucket].append(members)
            self._flush(bucket, final=False)

    def _flush(self, bucket: int, *, final: bool) -> None:
        held = sum(t.num_rows for t in self.held[bucket])
        while held >= self.shard_rows or (final and held):
            table = pa.concat_tables(self.held[bucket])
            shard, rest = table.slice(0, self.shard_rows), table.slice(self.shard_rows)
            name = f"shard-b{bucket:02d}-{self.next_shard[bucket]:05d}.parquet"
            self.next_shard[bucket] += 1
            self._write(name, shard)
            self.buckets[bucket]["shards"].append(name)
            self.held[bucket] = [rest] if rest.num_rows else []
            held = rest.num_rows

    def _write(self, name: str, table: pa.Table) -> None:
        self.staging.add_table(f"{self.plan.phase.name}/{name}", table)
        self.shards.append(name)

    def finish(self) -> dict[str, Any]:
        for bucket in range(len(self.held)):
            self._flush(bucket, final=True)
        if self.plan.rows == 0 and self.part == 0:
            # An empty phase still has its one (empty) shard, as readers expect a file.
            self._write("shard-00000.parquet", EXPORT_SCHEMA.empty_table())
        receipt: dict[str, Any] = {"rows": self.rows, "tokens": self.tokens, "shards": self.shards}
        if self.job.bounds is not None:
            receipt["buckets"] = self.buckets
        return receipt


def export_rows(job: ExportJob, plan: PhasePlan, spilled: pa.Table) -> pa.Table:
    """Spilled rows (sorted by position) as the parquet export's rows."""
    manifest, phase = job.manifest, plan.phase
    count = spilled.num_rows
    positions = spilled["position"].to_numpy()
    sources = spilled["source"].to_numpy()
    files = spilled["file"].to_numpy()
    names = [s.name for s in phase.sources]
    assets = [s.asset for s in phase.sources]
    paths = [[f.path for f in s.files] for s in phase.sources]
    n_tokens = spilled["n_tokens"].to_numpy()
    bounds = job.bounds
    return pa.table(
        {
            "row_id": [manifest.row_id(phase.name, p) for p in positions.tolist()],
            "blend": [manifest.blend] * count,
            "blend_version": [manifest.version] * count,
            "phase": [phase.name] * count,
            "source": [names[s] for s in sources.tolist()],
            "source_asset": [assets[s] for s in sources.tolist()],
            "source_file": [
                paths[s][f] for s, f in zip(sources.tolist(), files.tolist(), strict=True)
            ],
            "source_row_id": spilled["source_row_id"],
            "epoch": spilled["epoch"],
            "text": spilled["text"],
            "n_tokens": spilled["n_tokens"],
            "length_bucket": (
                [bucket_label(b, bounds) for b in bucket_of(n_tokens, bounds).tolist()]
                if bounds
                else pa.nulls(count, pa.string())
            ),
        },
        schema=EXPORT_SCHEMA,
    )


def write_part(
    job: ExportJob, phase_index: int, part: int, staging: Staging, progress: Progress
) -> dict[str, Any]:
    """Write one part of one phase into `staging` in every format of the job; its receipt
    (rows, tokens, shards, buckets, Megatron datasets)."""
    plan = job.plans[phase_index]
    with_ids = "megatron" in job.formats
    parquet = ParquetPartWriter(staging, job, plan, part) if "parquet" in job.formats else None
    megatron = (
        MegatronPartWriter(staging.sub("megatron"), job.manifest, plan, part, job.tokens.tokenizer)
        if with_ids
        else None
    )
    start, end = plan.parts[part]
    with scratch_dir(job.data_dir) as scratch:
        spill = Spill(scratch, _spill_schema(job, with_ids), "position")
        _gather(job, plan, part, spill, with_ids)
        spill.close()
        shard_rows = job.options.export_shard_rows
        for bucket in range(math.ceil((end - start) / shard_rows)):
            spilled = spill.read(bucket)
            if parquet is not None:
                parquet.add(export_rows(job, plan, spilled), start // shard_rows + bucket)
            if megatron is not None:
                megatron.add(spilled)
            progress.advance(spilled.num_rows, int(pc.sum(spilled["n_tokens"]).as_py() or 0))
            del spilled  # before the next bucket is read
    receipt: dict[str, Any] = {
        "phase": plan.phase.name,
        "part": part,
        "rows": end - start,
        "tokens": int(plan.n_tokens[start:end].sum()),
    }
    if parquet is not None:
        receipt["parquet"] = parquet.finish()
    if megatron is not None:
        receipt["megatron"] = megatron.finish()
    return receipt


def finish_parquet(
    staging: Staging, job: ExportJob, receipts: dict[str, list[dict[str, Any]]], out: Path
) -> ExportReport:
    """The parquet export's report from its parts' receipts, and `schedule.json` when
    bucketed."""
    report = ExportReport(out, {}, {}, {})
    for plan in job.plans:
        parts = [r["parquet"] for r in receipts[plan.phase.name]]
        name = plan.phase.name
        report.rows[name] = sum(p["rows"] for p in parts)
        report.tokens[name] = sum(p["tokens"] for p in parts)
        report.shards[name] = max(1, sum(len(p["shards"]) for p in parts))
        if job.bounds is not None:
            stages = []
            for index, stage in enumerate(bucket_schedule(job.bounds)):
                stages.append(
                    {
                        **stage,
                        "rows": sum(p["buckets"][index]["rows"] for p in parts),
                        "tokens": sum(p["buckets"][index]["tokens"] for p in parts),
                        "shards": [s for p in parts for s in p["buckets"][index]["shards"]],
                    }
                )
            report.schedule[name] = stages
    if job.bounds is not None:
        staging.add_json(
            SCHEDULE_FILE,
            {
                "order": "short_to_long",
                "bounds": job.bounds,
                "blend_version": job.manifest.version,
                "phases": report.schedule,
            },
        )
    return report


def replay_row(manifest: Manifest, phase_name: str, number: int, tokens: TokenCache) -> dict:
    """Row `number` of a phase's export re-created from the manifest alone (when no export of its
    version is there): the phase planned from the token cache, and the one row the plan names
    read from its pinned file (checked by the caller with `verify_pinned_files`)."""
    phase = next((p for p in manifest.phases if p.name == phase_name), None)
    if phase is None:
        raise KeyError(f"blend {manifest.ref} has no phase {phase_name!r}")
    data_dir = tokens.data_dir
    options = BlendSettings()
    plan = plan_phase(
        manifest,
        phase,
        lambda f: tokens.counts(
            CountedFile(f.resolve(data_dir), f.sha256, BLEND_SOURCES[f.asset].text_column)
        ),
        part_rows=options.export_part_rows,
        shard_rows=options.export_shard_rows,
    )
    full_id = manifest.row_id(phase.name, number)
    if not 0 <= number < plan.rows:
        raise KeyError(f"{manifest.ref} phase {phase.name!r} has {plan.rows} rows: no {full_id}")
    source = phase.sources[int(plan.source[number])]
    resolved = source.files[int(plan.file[number])]
    family = BLEND_SOURCES[resolved.asset]
    row = read_output(
        resolved.resolve(data_dir), columns=[family.text_column, family.id_column]
    ).slice(int(plan.row[number]), 1)
    return {
        "row_id": full_id,
        "blend": manifest.blend,
        "blend_version": manifest.version,
        "phase": phase.name,
        "source": source.name,
        "source_asset": source.asset,
        "source_file": resolved.path,
        "source_row_id": str(row[family.id_column][0].as_py()),
        "epoch": int(plan.epoch[number]),
        "text": row[family.text_column][0].as_py() or "",
        "n_tokens": int(plan.n_tokens[number]),
        "length_bucket": None,
    }
