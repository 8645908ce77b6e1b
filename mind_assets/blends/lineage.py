"""Lineage of a blend: the stage-by-stage audit and the ancestry of one exported row (or of one
row of an asset, as a published asset's card traces it), walked along the parent links each
output family declares."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mind_assets.blends.export import replay_row, verify_pinned_files
from mind_assets.blends.families import family
from mind_assets.blends.manifest import LINEAGE_FIELDS, Manifest, MaterializationLookup
from mind_assets.blends.release import release_version
from mind_assets.blends.tokens import TokenCache
from mind_assets.blends.versions import BlendRef, load_manifest_version
from mind_assets.decontamination.record import read_record
from mind_assets.lib.outputs import Keys, OutputFamily
from mind_assets.lib.quarantine import rejections_per_rule
from mind_assets.lib.storage import (
    blend_export_dir,
    files_under,
    output_exists,
    output_of,
    output_rows,
    quarantine_version,
    read_output,
    read_output_schema,
)
from mind_assets.metrics.report import format_table

# What a generated row records about the request that made it, shown once per trace.
GENERATION_REQUEST_FIELDS = (
    *(f for f in LINEAGE_FIELDS if f != "isolation"),
    "sampling_params",
    "seed",
    "request_hash",
    "finish_reason",
    "created_at",
)


@dataclass
class StaleInput:
    asset: str
    partition: str
    pinned: str | None
    current: str | None


def stale_inputs(manifest: Manifest, lookup: MaterializationLookup) -> list[StaleInput]:
    """Upstream partitions rematerialized (a different data version) since the manifest."""
    changed = []
    for entry in manifest.upstream():
        current = lookup(entry["asset"], entry["partition"]).get("data_version")
        if current != entry["data_version"]:
            changed.append(
                StaleInput(entry["asset"], entry["partition"], entry["data_version"], current)
            )
    return changed


def audit_rows(manifest: Manifest, data_dir: Path) -> list[dict[str, Any]]:
    """Every partition a blend's files derive from, roots first (raw documents -> chunks ->
    conversations -> filtered rows; seeds -> task Q&A; problems -> solution traces), with the
    rows and tokens it holds now and what its quarantine holds and why; then the blend's tokens
    per source."""
    blend_tokens = {
        f"{phase.name}/{source.name}": source.tokens
        for phase in manifest.phases
        for source in phase.sources
    }
    rows = [partition_audit(f, keys, data_dir) for f, keys in chain_partitions(manifest)]
    for name, tokens in blend_tokens.items():
        rows.append(
            {
                "stage": "blend",
                "partition": name,
                "rows": "",
                "tokens": round(tokens),
                "detail": manifest.blend,
            }
        )
    return rows


def chain_partitions(manifest: Manifest) -> list[tuple[OutputFamily, Keys]]:
    """Every partition a blend's files derive from, roots first, each once."""
    partitions: dict[tuple[str, str], tuple[OutputFamily, Keys]] = {}
    for phase in manifest.phases:
        for source in phase.sources:
            for f in source.files:
                declared = family(f.asset)
                for upstream, keys in declared.upstream(declared.keys(f.partition)):
                    partitions.setdefault(
                        (upstream.name, upstream.partition_key(keys)), (upstream, keys)
                    )
    return list(partitions.values())


def benchmark_removals(
    partitions: Iterable[tuple[OutputFamily, Keys]], data_dir: Path
) -> list[dict[str, Any]]:
    """Per partition that keeps a quarantine, the rows quarantined for holding an item of each
    benchmark (read off the quarantine's `contamination` column as it is now), with the index
    the partition was checked against."""
    rows = []
    for declared, keys in partitions:
        if declared.quarantine_schema is None:
            continue
        path = declared.path(data_dir, keys)
        if not output_exists(path):
            continue
        quarantine = quarantine_version(path, declared.quarantine_path(data_dir, keys))
        if not output_exists(quarantine):
            continue
        if "contamination" not in read_output_schema(quarantine).names:
            continue
        found = read_output(quarantine, columns=["contamination"])["contamination"].to_pylist()
        counts = Counter(b for row in found for b in {m["benchmark"] for m in row or ()})
        record = read_record(read_output_schema(path))
        for benchmark, removed in sorted(counts.items()):
            rows.append(
                {
                    "benchmark": benchmark,
                    "stage": declared.name,
                    "partition": declared.partition_key(keys),
                    "removed": removed,
                    "index": record.index_version if record else "-",
                }
            )
    return rows


def removal_rows(manifest: Manifest, data_dir: Path) -> list[dict[str, Any]]:
    """What each benchmark removed in every stage behind a blend (see `benchmark_removals`)."""
    return benchmark_removals(chain_partitions(manifest), data_dir)


def decontamination_lines(manifest: Manifest, data_dir: Path) -> list[str]:
    """The audit's decontamination summary: the index the blend's files had to be checked
    against, and per benchmark the rows quarantined in each stage behind the blend."""
    index = manifest.decontamination
    if not index:
        return ["decontamination: off (no benchmark list when the manifest was built)"]
    lines = [
        f"decontamination: every file checked against benchmark index {index['version']} "
        f"({', '.join(sorted(index['benchmarks']))})"
    ]
    per_benchmark: dict[str, list[str]] = {}
    for row in removal_rows(manifest, data_dir):
        per_benchmark.setdefault(row["benchmark"], []).append(
            f"{row['stage']}[{row['partition']}] {row['removed']}"
        )
    for benchmark in sorted(index["benchmarks"]):
        where = per_benchmark.get(benchmark)
        total = sum(int(w.rsplit(" ", 1)[1]) for w in where or [])
        lines.append(
            f"  removed for {benchmark}: {total} rows" + (f" ({', '.join(where)})" if where else "")
        )
    return lines


def partition_audit(declared: OutputFamily, keys: Keys, data_dir: Path) -> dict[str, Any]:
    """One audit row: a partition's accepted rows, their tokens, the prompt versions and models
    behind them, and its quarantine's rejections per rule."""
    row: dict[str, Any] = {
        "stage": declared.name,
        "partition": declared.partition_key(keys),
        "rows": "",
        "tokens": "",
        "detail": "",
    }
    path = declared.path(data_dir, keys)
    if not output_exists(path):
        row["detail"] = "not materialized"
        return row
    names = set(read_output_schema(path).names)
    wanted = [c for c in (declared.token_column, "prompt_version", "model") if c in names]
    table = read_output(path, columns=wanted)
    row["rows"] = output_rows(path)
    if declared.token_column in names:
        row["tokens"] = int(pc.sum(table[declared.token_column]).as_py() or 0)
    details = []
    for column, what in (("prompt_version", "prompt"), ("model", "model")):
        if column in names:
            values = sorted({v[:16] for v in table[column].to_pylist() if v})
            details.append(f"{what} {','.join(values)}")
    if declared.quarantine_schema is not None:
        quarantine = quarantine_version(path, declared.quarantine_path(data_dir, keys))
        if output_exists(quarantine):
            reasons = read_output(quarantine, columns=["rejected_by"])["rejected_by"]
            per_rule = rejections_per_rule(reasons.to_pylist())
            details.append(
                f"quarantined {len(reasons)}"
                + (
                    ": " + ", ".join(f"{r}={n}" for r, n in per_rule.most_common())
                    if per_rule
                    else ""
                )
            )
    row["detail"] = "; ".join(details)
    return row


def format_audit(manifest: Manifest, data_dir: Path, lookup: MaterializationLookup) -> str:
    stale = stale_inputs(manifest, lookup)
    status = (
        "up to date" if not stale else "STALE: inputs rematerialized since the manifest was built"
    )
    lines = [f"blend {manifest.ref} (manifest {manifest.created_at}): {status}"]
    lines += [f"  changed: {s.asset} [{s.partition}] {s.pinned} -> {s.current}" for s in stale]
    lines += [f"  left out by a quality gate: {line}" for line in excluded_lines(manifest)]
    lines += decontamination_lines(manifest, data_dir)
    rows = audit_rows(manifest, data_dir)
    lines.append(
        format_table(pa.Table.from_pylist([{k: str(v) for k, v in r.items()} for r in rows]))
        if rows
        else "(no stages)"
    )
    return "\n".join(lines)


def excluded_lines(manifest: Manifest) -> list[str]:
    """One line per source partition the quality gate or the decontamination requirement left
    out of the blend, with why."""
    return [
        f"{e['asset']}[{e['partition']}] (source {e['source']}): {'; '.join(e['checks'])}"
        for e in manifest.excluded
    ]


def audit_markdown(manifest: Manifest, data_dir: Path) -> str:
    rows = audit_rows(manifest, data_dir)
    lines = ["| stage | partition | rows | tokens | detail |", "| --- | --- | ---: | ---: | --- |"]
    lines += [
        f"| {r['stage']} | {r['partition']} | {r['rows']} | {r['tokens']} | {r['detail']} |"
        for r in rows
    ]
    excluded = excluded_lines(manifest)
    if excluded:
        lines += [
            "",
            "Left out by a quality gate:",
            *(f"- {line}" for line in excluded),
        ]
    lines += ["", *(f"- {line.strip()}" for line in decontamination_lines(manifest, data_dir))]
    return "\n".join(lines)


@dataclass(frozen=True)
class RowId:
    """`<blend>[@<version>]:<phase>:<n>`: an exported row, by the blend version it belongs to."""

    ref: BlendRef
    phase: str
    number: int

    @classmethod
    def parse(cls, text: str) -> RowId:
        try:
            ref, phase, number = text.rsplit(":", 2)
            return cls(BlendRef.parse(ref), phase, int(number))
        except ValueError as error:
            raise KeyError(
                f"row id {text!r}: expected <blend>[@<version>]:<phase>:<row number> ({error})"
            ) from None


def find_exported_row(
    data_dir: Path, row_id: str, tokens: Callable[[Manifest], TokenCache] | None = None
) -> tuple[dict[str, Any], Manifest]:
    """The exported row `row_id` names and the manifest version it belongs to. The row is read
    from an export of that version when one is there; otherwise, since an export is a function
    of its manifest, it is re-created from the pinned files (with `tokens`, the token cache of
    the manifest's tokenizer)."""
    wanted = RowId.parse(row_id)
    manifest = load_manifest_version(data_dir, wanted.ref)
    full_id = manifest.row_id(wanted.phase, wanted.number)
    candidates = [blend_export_dir(data_dir, manifest.blend)]
    if manifest.version:
        candidates.insert(0, blend_export_dir(data_dir, manifest.blend, manifest.version))
    for directory in candidates:
        if (release_version(directory) or "") != manifest.version:
            continue
        # Only the parquet export's shards: the Megatron export lives beside them.
        for shard in files_under(directory, f"{wanted.phase}/shard-*.parquet"):
            table = read_output(shard, filters=pc.field("row_id").isin([full_id, row_id]))
            if table.num_rows:
                return table.to_pylist()[0], manifest
    if not any(p.name == wanted.phase for p in manifest.phases):
        raise KeyError(f"blend {manifest.ref} has no phase {wanted.phase!r}")
    if tokens is None:
        raise KeyError(
            f"no export of {manifest.ref} holds row {full_id!r} "
            f"(run `mind export-blend {manifest.ref}`)"
        )
    verify_pinned_files(manifest, data_dir)
    return replay_row(manifest, wanted.phase, wanted.number, tokens(manifest)), manifest


def trace_row(
    row_id: str, data_dir: Path, tokens: Callable[[Manifest], TokenCache] | None = None
) -> dict[str, Any]:
    """The full ancestry of one exported row, as nested dicts: the exported row, the source row
    it was sampled from, the request that generated it, and each parent its family declares, up
    to a root (raw document, seed rows, problem). Parents are read at the versions the row's
    blend version pinned, so a partition regenerated since still traces to the text this row
    came from. A parent row that is gone is None."""
    exported, manifest = find_exported_row(data_dir, row_id, tokens)
    declared = family(exported["source_asset"])
    # source_file is relative to the data root (absolute in exports from before), so a moved
    # data root traces the same; it names the pinned version file.
    path = data_dir / exported["source_file"]
    row = _rows_by_id(path, declared, [exported["source_row_id"]])
    if not row:
        raise KeyError(
            f"{path} no longer holds {declared.id_column}={exported['source_row_id']!r} "
            "(regenerated since export?)"
        )
    pinned = {(p["asset"], p["partition"]): p["path"] for p in manifest.pinned if p.get("path")}
    keys = declared.keys_from_path(output_of(path))
    return {"exported_row": exported, **_ancestry(declared, keys, row[0], data_dir, pinned)}


def trace_asset_row(asset: str, row_id: str, data_dir: Path) -> dict[str, Any]:
    """The ancestry of one row of an asset as it is now, found by its id column in the current
    version of any materialized partition; parents are read at their current versions."""
    declared = family(asset)
    for keys in declared.materialized(data_dir):
        row = _rows_by_id(declared.path(data_dir, keys), declared, [row_id])
        if row:
            return _ancestry(declared, keys, row[0], data_dir, {})
    raise KeyError(
        f"no materialized partition of {asset} holds {declared.id_column}={row_id!r} "
        f"(looked in {data_dir / asset})"
    )


def _ancestry(
    declared: OutputFamily,
    keys: Keys,
    row: dict[str, Any],
    data_dir: Path,
    pinned: dict[tuple[str, str], str],
) -> dict[str, Any]:
    found: dict[str, Any] = {declared.row_label: row}
    if "request_hash" in row:
        found["generation_request"] = {k: row.get(k) for k in GENERATION_REQUEST_FIELDS}
    for link in declared.parents:
        parent = link.family
        ids = list(row[link.column] or ()) if link.many else [row[link.column]]
        parents = [
            (parent_keys, parent_row)
            for parent_keys in declared.parent_keys(link, keys, row)
            for parent_row in _parent_rows(parent, parent_keys, data_dir, pinned, ids)
        ]
        if link.many:
            found[parent.row_label] = [
                r if parent.is_root else _ancestry(parent, k, r, data_dir, pinned)
                for k, r in parents
            ]
        elif parents:
            # Nearer ancestry first: a request recorded by this row is not replaced.
            for name, value in _ancestry(parent, *parents[0], data_dir, pinned).items():
                found.setdefault(name, value)
        else:
            found[parent.row_label] = None
    return found


def _pinned_or_current(
    declared: OutputFamily, keys: Keys, data_dir: Path, pinned: dict[tuple[str, str], str]
) -> Path:
    """The version of a parent partition the blend's manifest pinned; the current file when the
    manifest names none (manifests from before versioned outputs)."""
    version = pinned.get((declared.name, declared.partition_key(keys)))
    return data_dir / version if version else declared.path(data_dir, keys)


def _parent_rows(
    parent: OutputFamily,
    keys: Keys,
    data_dir: Path,
    pinned: dict[tuple[str, str], str],
    ids: list[str],
) -> list[dict[str, Any]]:
    """The parent rows `ids` names: accepted ones, then those in the quarantine written with
    them (a raw page that holds a benchmark item is quarantined, and a conversation written
    from one of its clean chunks still traces to it, its `rejected_by` saying why)."""
    path = _pinned_or_current(parent, keys, data_dir, pinned)
    rows = _rows_by_id(path, parent, ids)
    missing = [i for i in ids if i not in {r[parent.id_column] for r in rows}]
    if missing and parent.quarantine_schema is not None and output_exists(path):
        held = quarantine_version(path, parent.quarantine_path(data_dir, keys))
        rows += _rows_by_id(held, parent, missing)
    return rows


def _rows_by_id(path: Path, declared: OutputFamily, ids: list[str]) -> list[dict[str, Any]]:
    if not ids or not output_exists(path):
        return []
    return read_output(path, filters=[(declared.id_column, "in", ids)]).to_pylist()


def format_trace(ancestry: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
        return text

    return "\n\n".join(f"== {name} ==\n{show(value)}" for name, value in ancestry.items())
