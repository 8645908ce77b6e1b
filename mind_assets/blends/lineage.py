"""Lineage of a blend: the stage-by-stage audit and the ancestry of one exported row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mind_assets.blends.manifest import Manifest, MaterializationLookup
from mind_assets.lib.storage import asset_path
from mind_assets.metrics.report import format_table
from mind_assets.metrics.store import MetricsStore


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


def audit_rows(manifest: Manifest, store: MetricsStore) -> list[dict[str, Any]]:
    """Raw shards -> chunks -> conversations -> filtered rows -> blend, with counts and tokens."""
    shards: set[str] = set()
    styles: set[tuple[str, str]] = set()
    blend_tokens: dict[str, float] = {}
    for phase in manifest.phases:
        for source in phase.sources:
            for f in source.files:
                shard = f.partition.split("|")[0]
                if f.asset != "task_qa":
                    shards.add(shard)
                if f.asset == "filtered_conversations":
                    styles.add((shard, f.partition.split("|")[1]))
            blend_tokens[f"{phase.name}/{source.name}"] = source.tokens
    rows: list[dict[str, Any]] = []
    if shards:
        shard_list = sorted(shards)
        marks = ", ".join("?" for _ in shard_list)
        for r in store.query(
            f"SELECT shard, count(*) AS n, sum(n_chars) AS chars FROM documents "
            f"WHERE shard IN ({marks}) GROUP BY shard ORDER BY shard",
            shard_list,
        ).to_pylist():
            rows.append(
                {
                    "stage": "raw_documents",
                    "partition": r["shard"],
                    "rows": r["n"],
                    "tokens": "",
                    "detail": f"{r['chars']} chars",
                }
            )
        for r in store.query(
            f"SELECT shard, count(*) AS n, sum(n_tokens) AS tokens FROM chunks "
            f"WHERE shard IN ({marks}) GROUP BY shard ORDER BY shard",
            shard_list,
        ).to_pylist():
            rows.append(
                {
                    "stage": "chunks",
                    "partition": r["shard"],
                    "rows": r["n"],
                    "tokens": r["tokens"],
                    "detail": "",
                }
            )
    for shard, style in sorted(styles):
        for r in store.query(
            "SELECT count(*) AS n, sum(completion_tokens) AS tokens, "
            "string_agg(DISTINCT prompt_version, ',') AS versions, "
            "string_agg(DISTINCT model, ',') AS models "
            "FROM generations WHERE shard = ? AND style = ?",
            [shard, style],
        ).to_pylist():
            rows.append(
                {
                    "stage": "conversations",
                    "partition": f"{shard}|{style}",
                    "rows": r["n"],
                    "tokens": r["tokens"],
                    "detail": f"prompt {r['versions']}; model {r['models']}",
                }
            )
        acceptance = store.query(
            "SELECT accepted, tokens_kept FROM acceptance WHERE shard = ? AND style = ?",
            [shard, style],
        ).to_pylist()
        rejections = store.query(
            "SELECT rule, rejected FROM rejections_per_rule "
            "WHERE shard = ? AND style = ? AND rejected > 0 "
            "ORDER BY rejected DESC",
            [shard, style],
        ).to_pylist()
        if acceptance:
            rows.append(
                {
                    "stage": "filtered_conversations",
                    "partition": f"{shard}|{style}",
                    "rows": acceptance[0]["accepted"],
                    "tokens": acceptance[0]["tokens_kept"],
                    "detail": "rejected: "
                    + ", ".join(f"{x['rule']}={x['rejected']}" for x in rejections),
                }
            )
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


def format_audit(manifest: Manifest, store: MetricsStore, lookup: MaterializationLookup) -> str:
    import pyarrow as pa

    stale = stale_inputs(manifest, lookup)
    status = (
        "up to date" if not stale else "STALE: inputs rematerialized since the manifest was built"
    )
    lines = [f"blend {manifest.blend} (manifest {manifest.created_at}): {status}"]
    lines += [f"  changed: {s.asset} [{s.partition}] {s.pinned} -> {s.current}" for s in stale]
    rows = audit_rows(manifest, store)
    lines.append(
        format_table(pa.Table.from_pylist([{k: str(v) for k, v in r.items()} for r in rows]))
        if rows
        else "(no stages)"
    )
    return "\n".join(lines)


def audit_markdown(manifest: Manifest, store: MetricsStore) -> str:
    rows = audit_rows(manifest, store)
    lines = ["| stage | partition | rows | tokens | detail |", "| --- | --- | ---: | ---: | --- |"]
    lines += [
        f"| {r['stage']} | {r['partition']} | {r['rows']} | {r['tokens']} | {r['detail']} |"
        for r in rows
    ]
    return "\n".join(lines)


def find_exported_row(export_root: Path, row_id: str) -> dict[str, Any]:
    blend = row_id.split(":", 1)[0]
    directory = export_root / blend
    if not directory.is_dir():
        raise KeyError(
            f"no export for blend {blend!r} under {export_root} (run `mind export-blend {blend}`)"
        )
    # Only the parquet export's shards: the Megatron export and staging directories live beside.
    shards = [p for p in sorted(directory.glob("*/shard-*.parquet")) if p.parent.name[0] != "."]
    if not shards:
        raise KeyError(f"blend {blend!r} has no parquet export (run `mind export-blend {blend}`)")
    table = ds.dataset(shards, format="parquet").to_table(filter=pc.field("row_id") == row_id)
    if table.num_rows == 0:
        raise KeyError(f"row {row_id!r} is not in the export of blend {blend!r}")
    return table.to_pylist()[0]


def trace_row(row_id: str, data_dir: Path) -> dict[str, Any]:
    """The full ancestry of one exported row, as nested dicts (export -> source row -> request ->
    chunk -> raw document, or -> seeds for task Q&A)."""
    exported = find_exported_row(data_dir / "blend_exports", row_id)
    ancestry: dict[str, Any] = {"exported_row": exported}
    # source_file is relative to the data root (absolute in exports from before), so a moved
    # data root traces the same.
    source = _row_by_id(
        data_dir / exported["source_file"], exported["source_asset"], exported["source_row_id"]
    )
    asset = exported["source_asset"]
    if asset == "raw_documents":
        ancestry["raw_document"] = source
        return ancestry
    ancestry[asset] = source
    ancestry["generation_request"] = {
        k: source.get(k)
        for k in (
            "prompt_id",
            "prompt_version",
            "model",
            "engine",
            "engine_version",
            "engine_dtype",
            "sampling_params",
            "seed",
            "request_hash",
            "finish_reason",
            "created_at",
        )
    }
    if asset == "task_qa":
        seeds = pq.read_table(asset_path(data_dir, "task_seeds", source["family"])).to_pylist()
        ancestry["seeds"] = [s for s in seeds if s["seed_id"] in set(source["seed_ids"])]
        return ancestry
    shard = source["shard"]
    chunks = pq.read_table(
        asset_path(data_dir, "chunks", shard), filters=[("chunk_id", "=", source["chunk_id"])]
    )
    ancestry["chunk"] = chunks.to_pylist()[0] if chunks.num_rows else None
    documents = pq.read_table(
        asset_path(data_dir, "raw_documents", shard), filters=[("doc_id", "=", source["doc_id"])]
    )
    ancestry["raw_document"] = documents.to_pylist()[0] if documents.num_rows else None
    return ancestry


def _row_by_id(path: Path, asset: str, row_id: str) -> dict[str, Any]:
    from mind_assets.blends.spec import SOURCE_COLUMNS

    id_column = SOURCE_COLUMNS[asset][1]
    table = pq.read_table(path, filters=[(id_column, "=", row_id)])
    if table.num_rows == 0:
        raise KeyError(f"{path} no longer holds {id_column}={row_id!r} (regenerated since export?)")
    return table.to_pylist()[0]


def format_trace(ancestry: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
        return text

    return "\n\n".join(f"== {name} ==\n{show(value)}" for name, value in ancestry.items())
