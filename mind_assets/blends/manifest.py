"""Resolve a blend spec into a manifest: exact files, token counts, weights, epochs, lineage."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from mind_assets.blends.arithmetic import SourceSupply, allocate_phase
from mind_assets.blends.families import BLEND_SOURCES, family
from mind_assets.blends.gates import CheckGate, QualityGateError
from mind_assets.blends.spec import BlendSpec, BlendSpecError, SourceSpec
from mind_assets.blends.tokens import CountedFile, TokenCache
from mind_assets.decontamination.record import CheckRecord, IndexVersion, read_record
from mind_assets.lib.buckets import schedule as bucket_schedule
from mind_assets.lib.storage import (
    current_version,
    data_root_relative,
    output_exists,
    output_rows,
    output_sha256,
    pinned_version,
    read_output,
    read_output_schema,
    sha256_file,
)

# (asset, partition key) -> {"run_id", "data_version"} of its latest materialization.
MaterializationLookup = Callable[[str, str], dict[str, str | None]]

# `isolation` exists on solution traces only: how their tool calls were contained.
LINEAGE_FIELDS = (
    "prompt_id",
    "prompt_version",
    "model",
    "engine",
    "engine_version",
    "engine_dtype",
    "isolation",
)


@dataclass
class ResolvedFile:
    asset: str
    partition: str  # Dagster partition key ("shard", "shard|style", "mode|source", ...)
    # The pinned version file, relative to the data root (`MIND_DATA_DIR`), so a data root
    # moved, copied or mounted elsewhere still resolves. Regeneration writes a new version and
    # leaves this one in place.
    path: str
    sha256: str
    rows: int
    tokens: int
    run_id: str | None = None
    data_version: str | None = None
    # What the file's rows were checked against and what that removed (its CheckRecord);
    # None: never checked (a manifest from before decontamination, or decontamination off).
    decontamination: dict[str, Any] | None = None

    def resolve(self, data_dir: Path) -> Path:
        # Joining keeps the absolute paths of older manifests; a manifest from before outputs
        # were versioned names the current pointer, and pinned the version carrying its sha256.
        return pinned_version(data_dir / self.path, self.sha256)


@dataclass
class ResolvedSource:
    name: str
    asset: str
    quality_tier: str
    target_share: float
    max_epochs: float
    files: list[ResolvedFile]
    lineage: list[dict[str, Any]]
    tokens: float = 0.0
    weight: float = 0.0
    epochs: float = 0.0
    capped: bool = False

    @property
    def available_tokens(self) -> int:
        return sum(f.tokens for f in self.files)


@dataclass
class ResolvedPhase:
    name: str
    budget_tokens: float
    sources: list[ResolvedSource] = field(default_factory=list)


@dataclass
class Manifest:
    blend: str
    spec_path: str
    spec_sha256: str
    total_tokens: int
    seed: int
    tokenizer: str  # as the spec names it (a Hugging Face id or a directory), or the engine's
    created_at: str
    phases: list[ResolvedPhase]
    # Every upstream partition the blend depends on, directly or through its inputs, with the
    # run id and data version it had when the manifest was built.
    pinned: list[dict[str, Any]] = field(default_factory=list)
    # Sequence-length buckets in training order, short to long ({bucket, max_tokens}; the last
    # is open-ended), when the blend is exported bucketed (MIND_BLENDS__EXPORT_BUCKET with
    # MIND_LENGTH_BUCKETS); the export shards each phase by them in this order.
    schedule: list[dict[str, Any]] = field(default_factory=list)
    # Source partitions the quality gate left out: asset, partition, check, reason.
    excluded: list[dict[str, Any]] = field(default_factory=list)
    # The tokenizer's fingerprint (`lib/tokenizer.fingerprint_of`): an export refuses any
    # other. Empty in manifests from before it was recorded.
    tokenizer_sha256: str = ""
    # The benchmark index every file had to be checked against (version, per-benchmark
    # fingerprints, splits, parameters); empty when decontamination was off.
    decontamination: dict[str, Any] = field(default_factory=dict)
    # The version this manifest was read from (`<UTC time>-<sha256 prefix>`, the name of its
    # file under blend_manifest/<blend>/.versions/manifest.json/); not part of its content.
    version: str = ""

    @property
    def ref(self) -> str:
        """`blend@version` (the blend's name alone for a manifest from before versions)."""
        return f"{self.blend}@{self.version}" if self.version else self.blend

    def row_id(self, phase: str, number: int) -> str:
        """The id of row `number` of a phase's export: `blend@version:phase:number`, what
        `mind trace` follows back to its source."""
        return f"{self.ref}:{phase}:{number}"

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload.pop("version")
        for phase, resolved in zip(payload["phases"], self.phases, strict=True):
            phase["tokens"] = sum(s.tokens for s in resolved.sources)
            for source, src in zip(phase["sources"], resolved.sources, strict=True):
                source["available_tokens"] = src.available_tokens
        return payload

    def file_rows(self) -> list[dict[str, Any]]:
        """The parquet twin: one row per (phase, source, file), its decontamination record as
        JSON."""
        rows = []
        for phase in self.phases:
            for source in phase.sources:
                for f in source.files:
                    share = f.tokens / source.available_tokens if source.available_tokens else 0.0
                    rows.append(
                        {
                            "blend": self.blend,
                            "phase": phase.name,
                            "source": source.name,
                            "quality_tier": source.quality_tier,
                            **asdict(f),
                            "weight": source.weight * share,
                            "epochs": source.epochs,
                            "source_tokens": source.tokens,
                            "phase_budget": phase.budget_tokens,
                            # As JSON: a record's per-benchmark map can be empty, and Parquet
                            # has no struct without fields.
                            "decontamination": None
                            if f.decontamination is None
                            else json.dumps(f.decontamination, sort_keys=True),
                        }
                    )
        return rows

    def upstream(self) -> list[dict[str, Any]]:
        return self.pinned


def upstream_chain(asset: str, partition: str) -> list[tuple[str, str]]:
    """The partitions a file's content derives from, roots first and itself last, each once (the
    lineage a manifest pins), as its family declares them."""
    source = family(asset)
    chain = ((f.name, f.partition_key(keys)) for f, keys in source.upstream(source.keys(partition)))
    return list(dict.fromkeys(chain))


def upstream_version(data_dir: Path, asset: str, partition: str) -> str | None:
    """The current version file of an upstream partition, relative to the data root."""
    declared = family(asset)
    pointer = declared.path(data_dir, declared.keys(partition))
    if not output_exists(pointer):
        return None
    return data_root_relative(current_version(pointer), data_dir)


def source_files(
    source: SourceSpec, data_dir: Path, known: Mapping[str, Sequence[str]]
) -> list[tuple[str, Path]]:
    """(partition key, path) of every file a source selects: the selection's keys per dimension,
    else every key it has now (`known`, by dimension name, for registered or configured ones).
    A missing file is an error."""
    declared = BLEND_SOURCES[source.asset]
    narrowed = source.selection.narrowed()
    choices = {
        dim.name: narrowed.get(dim.selection) or known.get(dim.name) or dim.values
        for dim in declared.dims
    }
    partitions = declared.partitions(choices)
    pairs = [(declared.partition_key(k), declared.path(data_dir, k)) for k in partitions]
    if not pairs:
        raise BlendSpecError(f"source {source.name!r} selects no files")
    missing = [str(p) for _, p in pairs if not output_exists(p)]
    if missing:
        raise BlendSpecError(
            f"source {source.name!r} ({source.asset}): not materialized yet: {', '.join(missing)}"
        )
    return pairs


def source_lineage(paths: list[Path]) -> list[dict[str, Any]]:
    """Distinct prompt/model/engine/sampling combinations that produced a source's rows."""
    combos: dict[str, dict[str, Any]] = {}
    for path in paths:
        names = read_output_schema(path).names
        if "prompt_id" not in names:
            return []
        columns = [c for c in (*LINEAGE_FIELDS, "sampling_params") if c in names]
        for row in read_output(path, columns=columns).to_pylist():
            sampling = json.loads(row.pop("sampling_params", "{}") or "{}")
            sampling.pop("seed", None)  # seeds differ per row; they are in the rows themselves
            row["sampling_params"] = sampling
            combos.setdefault(json.dumps(row, sort_keys=True), row)
    return list(combos.values())


def resolve_files(
    source: SourceSpec,
    data_dir: Path,
    known: Mapping[str, Sequence[str]],
    lookup: MaterializationLookup,
    gate: CheckGate | None = None,
    excluded: list[dict[str, Any]] | None = None,
    required: IndexVersion | None = None,
) -> list[ResolvedFile]:
    """The current version of every file a source selects, pinned with its sha256, rows, the
    materialization that wrote it and its decontamination record (tokens are counted for all
    sources at once, `count_tokens`); a partition the quality `gate` keeps out, or whose rows
    were never checked against the `required` benchmark index, is left out and recorded in
    `excluded`."""
    files = []
    for partition, pointer in source_files(source, data_dir, known):
        path = current_version(pointer)  # the version this manifest pins
        digest = output_sha256(path)
        reasons = gate(source.asset, partition, digest) if gate is not None else []
        record = read_record(read_output_schema(path))
        reasons += unchecked_reasons(record, required)
        if reasons:
            if excluded is not None:
                excluded.append(
                    {
                        "source": source.name,
                        "asset": source.asset,
                        "partition": partition,
                        "checks": reasons,
                    }
                )
            continue
        materialization = lookup(source.asset, partition)
        files.append(
            ResolvedFile(
                asset=source.asset,
                partition=partition,
                path=data_root_relative(path, data_dir),
                sha256=digest,
                rows=output_rows(path),
                tokens=0,
                run_id=materialization.get("run_id"),
                data_version=materialization.get("data_version"),
                decontamination=record.to_json() if record else None,
            )
        )
    return files


def counted_files(manifest_phases: Sequence[ResolvedPhase], data_dir: Path) -> list[CountedFile]:
    """Every file the phases pin, as the token cache knows them."""
    return [
        CountedFile(f.resolve(data_dir), f.sha256, BLEND_SOURCES[f.asset].text_column)
        for phase in manifest_phases
        for source in phase.sources
        for f in source.files
    ]


def count_tokens(phases: Sequence[ResolvedPhase], data_dir: Path, tokens: TokenCache) -> None:
    """Fill in every pinned file's tokens from the token cache (encoding, once, what it does
    not hold yet)."""
    totals = tokens.totals(counted_files(phases, data_dir))
    for phase in phases:
        for source in phase.sources:
            for f in source.files:
                f.tokens = totals[f.sha256]


def unchecked_reasons(record: CheckRecord | None, required: IndexVersion | None) -> list[str]:
    """Why a file does not count as checked against the blend's benchmark index."""
    if required is None or not required.benchmarks:
        return []
    if record is None:
        return [f"decontamination: never checked against {name}" for name in required.benchmarks]
    return record.missing(required.benchmarks)


def allocate(phase: ResolvedPhase) -> None:
    """Each source's tokens, weight and epochs within its phase's budget (`arithmetic.py`)."""
    allocations = allocate_phase(
        phase.name,
        phase.budget_tokens,
        [
            SourceSupply(s.name, s.target_share, s.available_tokens, s.max_epochs)
            for s in phase.sources
        ],
    )
    for source, allocation in zip(phase.sources, allocations, strict=True):
        source.tokens, source.weight = allocation.tokens, allocation.weight
        source.epochs, source.capped = allocation.epochs, allocation.capped


def pinned_upstream(
    phases: list[ResolvedPhase], data_dir: Path, lookup: MaterializationLookup
) -> list[dict[str, Any]]:
    """Every upstream partition the blend's files derive from, with the run, data version and
    version file it had now: kept by `mind gc`, read by `mind trace`."""
    links = {
        link: None
        for phase in phases
        for source in phase.sources
        for f in source.files
        for link in upstream_chain(f.asset, f.partition)
    }
    pinned = []
    for asset, partition in links:
        materialization = lookup(asset, partition)
        if materialization.get("data_version") is not None:
            entry = {"asset": asset, "partition": partition, **materialization}
            version = upstream_version(data_dir, asset, partition)
            if version is not None:
                entry["path"] = version
            pinned.append(entry)
    return pinned


def build_manifest(
    spec: BlendSpec,
    spec_path: Path,
    data_dir: Path,
    *,
    known: Mapping[str, Sequence[str]],
    tokens: TokenCache,
    lookup: MaterializationLookup,
    length_buckets: Sequence[int] | None = None,
    gate: CheckGate | None = None,
    required: IndexVersion | None = None,
) -> Manifest:
    """`known`: the keys each registered or configured dimension has now, by dimension name
    ({"shard": [...], "family": [...], "source": [...]}). `tokens`: the token cache of the
    blend's tokenizer, which counts every file once. `length_buckets`: record a short-to-long
    bucket schedule for a bucketed export. `gate`: the quality gate each source partition must
    pass (see `gates.py`); `required`: the benchmark index every file's rows must have been
    checked against (see `decontamination/record.py`). What either keeps out is named in the
    manifest's `excluded`, or refuses the build when the spec says `on_failed_check: fail`."""
    excluded: list[dict[str, Any]] = []
    phases = []
    for phase_spec in spec.phases:
        phase = ResolvedPhase(phase_spec.name, spec.total_tokens * phase_spec.fraction)
        for source in phase_spec.sources:
            files = resolve_files(source, data_dir, known, lookup, gate, excluded, required)
            phase.sources.append(
                ResolvedSource(
                    name=source.name,
                    asset=source.asset,
                    quality_tier=source.quality_tier,
                    target_share=source.share,
                    max_epochs=source.max_epochs,
                    files=files,
                    lineage=source_lineage([f.resolve(data_dir) for f in files]),
                )
            )
        phases.append(phase)
    if excluded and spec.on_failed_check == "fail":
        named = "; ".join(
            f"{e['asset']}[{e['partition']}]: {', '.join(e['checks'])}" for e in excluded
        )
        raise QualityGateError(
            f"blend {spec.name!r} (on_failed_check: fail): source partitions failed a blocking "
            f"check or were never checked against its benchmarks: {named}"
        )
    count_tokens(phases, data_dir, tokens)
    for phase in phases:
        allocate(phase)
    return Manifest(
        blend=spec.name,
        spec_path=str(spec_path),
        spec_sha256=sha256_file(spec_path),
        total_tokens=spec.total_tokens,
        seed=spec.seed,
        tokenizer=tokens.tokenizer.name,
        tokenizer_sha256=tokens.tokenizer.fingerprint,
        created_at=datetime.now(UTC).isoformat(),
        phases=phases,
        pinned=pinned_upstream(phases, data_dir, lookup),
        schedule=bucket_schedule(length_buckets) if length_buckets else [],
        excluded=list({json.dumps(e, sort_keys=True): e for e in excluded}.values()),
        decontamination=required.to_json() if required and required.benchmarks else {},
    )


def manifest_from_json(payload: dict[str, Any], version: str = "") -> Manifest:
    phases = []
    for phase in payload["phases"]:
        sources = []
        for source in phase["sources"]:
            files = [ResolvedFile(**f) for f in source["files"]]
            fields = {k: v for k, v in source.items() if k not in ("files", "available_tokens")}
            sources.append(ResolvedSource(**fields, files=files))
        phases.append(ResolvedPhase(phase["name"], phase["budget_tokens"], sources))
    top = {k: v for k, v in payload.items() if k not in ("phases", "version")}
    return Manifest(**top, phases=phases, version=version)


def megatron_prefix(phase: str, source: str) -> str:
    """Where a (phase, source) indexed dataset lives in the Megatron export, relative to the
    export directory (`<prefix>.bin` + `<prefix>.idx`), so the export can be moved."""
    return f"{phase}/{source}"


def megatron_weights(manifest: Manifest) -> dict[str, str]:
    """Per phase, a Megatron-LM/NeMo `--data-path` list: `w1 prefix1 w2 prefix2 ...`, one entry
    per source with tokens, weights summing to 1 within the phase. Prefixes are relative to the
    Megatron export directory (`mind export-blend NAME --format megatron`), which writes the same
    list as `<phase>.data-path.txt`."""
    lists = {}
    for phase in manifest.phases:
        entries = [
            f"{source.weight:.6g} {megatron_prefix(phase.name, source.name)}"
            for source in phase.sources
            if source.weight > 0
        ]
        lists[phase.name] = " ".join(entries)
    return lists


def manifest_table(manifest: Manifest) -> pa.Table:
    return pa.Table.from_pylist(manifest.file_rows())
