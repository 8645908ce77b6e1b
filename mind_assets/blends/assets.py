"""`blend_manifest` and `blend_export`: one partition per blend spec in `blends/`."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)

from mind_assets.blends.export import ExportReport, export_blend
from mind_assets.blends.families import BLEND_SOURCES
from mind_assets.blends.lineage import audit_markdown, stale_inputs
from mind_assets.blends.manifest import (
    Manifest,
    MaterializationLookup,
    build_manifest,
    manifest_from_json,
    manifest_table,
    megatron_weights,
)
from mind_assets.blends.spec import blend_names, blend_spec_path, check_selection, load_blend_spec
from mind_assets.lib.metadata import file_data_version
from mind_assets.lib.report import markdown_table
from mind_assets.lib.storage import (
    blend_export_dir,
    blend_manifest_dir,
    blend_manifest_file,
    files_under,
    output_sha256,
    read_json,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from mind_assets.lib.tokenizer import load_tokenizer, token_counter
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import BlendSettings, MindSettings, get_settings

blend_partitions = StaticPartitionsDefinition(blend_names(get_settings().blends_dir) or ["example"])
DATA_VERSION_TAG = "dagster/data_version"


def instance_lookup(instance: DagsterInstance) -> MaterializationLookup:
    """Latest materialization (run id, data version) of an asset partition in this instance."""

    def lookup(asset_name: str, partition: str) -> dict[str, str | None]:
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset_name), asset_partitions=[partition]),
            limit=1,
        )
        if not result.records:
            return {"run_id": None, "data_version": None}
        record = result.records[0]
        tags = record.asset_materialization.tags or {}
        return {"run_id": record.run_id, "data_version": tags.get(DATA_VERSION_TAG)}

    return lookup


def manifest_dir(settings: MindSettings, blend: str) -> Path:
    return blend_manifest_dir(settings.data_dir, blend)


def export_dir(settings: MindSettings, blend: str) -> Path:
    return blend_export_dir(settings.data_dir, blend)


def load_manifest(settings: MindSettings, blend: str) -> Manifest:
    path = blend_manifest_file(settings.data_dir, blend)
    payload = read_json(path)
    if payload is None:
        raise FileNotFoundError(
            f"blend {blend!r} has no manifest at {path}: materialize blend_manifest[{blend}]"
        )
    return manifest_from_json(payload)


def resolve_blend(
    settings: MindSettings, instance: DagsterInstance, blend: str, llm: LLMResource
) -> Manifest:
    path = blend_spec_path(settings.blends_dir, blend)
    spec = load_blend_spec(path)
    known = known_partition_keys(settings, instance)
    check_selection(spec, path, known)
    return build_manifest(
        spec,
        path,
        settings.data_dir,
        known=known,
        count_tokens=token_counter(llm.model_path()),
        tokenizer_name=llm.model_name,
        lookup=instance_lookup(instance),
        length_buckets=settings.length_buckets if settings.blends.export_bucket else None,
    )


def known_partition_keys(settings: MindSettings, instance: DagsterInstance) -> dict[str, list[str]]:
    """The keys each dimension of a blend source has now: registered ones (shards, task
    families) from the instance, configured ones (math sources) from the settings."""
    known: dict[str, list[str]] = {}
    for source in BLEND_SOURCES.values():
        for dim in source.dims:
            if dim.dynamic is not None:
                known[dim.name] = sorted(instance.get_dynamic_partitions(dim.dynamic))
            elif dim.configured is not None:
                known[dim.name] = list(dim.configured(settings))
    return known


def write_manifest(settings: MindSettings, manifest: Manifest) -> dict[str, Any]:
    directory = manifest_dir(settings, manifest.blend)
    json_path = write_json_atomic(
        manifest.to_json(), blend_manifest_file(settings.data_dir, manifest.blend)
    )
    parquet_path = write_parquet_atomic(manifest_table(manifest), directory / "manifest.parquet")
    for phase, weights in megatron_weights(manifest).items():
        write_text_atomic(weights + "\n", directory / f"{phase}.megatron.txt")
    return {"json": json_path, "parquet": parquet_path}


@asset(
    partitions_def=blend_partitions,
    deps=[
        AssetDep(AssetKey(name), partition_mapping=AllPartitionMapping()) for name in BLEND_SOURCES
    ],
    group_name="blends",
    kinds={"json", "parquet"},
    code_version="1",
    description="A blend spec resolved to exact files, token counts, per-source weights and "
    "epochs (capped sources redistributed), upstream materializations pinned, and the prompts, "
    "models and sampling parameters behind every source.",
)
def blend_manifest(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    settings = get_settings()
    blend = context.partition_key
    manifest = resolve_blend(settings, context.instance, blend, llm)
    paths = write_manifest(settings, manifest)
    per_source = [
        {
            "phase": p.name,
            "source": s.name,
            "tier": s.quality_tier,
            "share": s.target_share,
            "weight": round(s.weight, 4),
            "epochs": round(s.epochs, 3),
            "tokens": round(s.tokens),
            "available": s.available_tokens,
            "capped": s.capped,
        }
        for p in manifest.phases
        for s in p.sources
    ]
    context.log.info("blend %s: %s", blend, per_source)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(paths["json"])),
            "parquet": MetadataValue.path(str(paths["parquet"])),
            "files": sum(len(s.files) for p in manifest.phases for s in p.sources),
            "total_tokens": manifest.total_tokens,
            "sources": MetadataValue.md(markdown_table(per_source)),
            "lineage_audit": MetadataValue.md(audit_markdown(manifest, settings.data_dir)),
            "upstream_partitions": len(manifest.upstream()),
            "stale_inputs_at_build": len(stale_inputs(manifest, instance_lookup(context.instance))),
        },
        data_version=file_data_version(paths["parquet"]),
    )


@dataclass
class BlendExports:
    """What one export of a blend wrote, per format."""

    directory: Path
    parquet: ExportReport | None = None
    megatron: Any = None  # MegatronReport, imported with megatron-core only when asked for

    def lines(self) -> list[str]:
        """One line per phase and format, as `mind export-blend` prints them."""
        lines = []
        if self.parquet is not None:
            for phase, rows in self.parquet.rows.items():
                lines.append(
                    f"{self.directory.name}/{phase}: {rows} rows, {self.parquet.tokens[phase]} "
                    f"tokens, {self.parquet.shards[phase]} shard(s) in {self.directory / phase}"
                )
        if self.megatron is not None:
            for phase, documents in self.megatron.documents.items():
                lines.append(
                    f"{self.directory.name}/{phase}: {documents} documents, "
                    f"{self.megatron.tokens[phase]} tokens (one eod each) in "
                    f"{self.megatron.datasets[phase]} indexed dataset(s); "
                    f"--data-args-path {self.megatron.data_path_file(phase)}"
                )
        return lines


def write_blend_exports(
    settings: MindSettings,
    manifest: Manifest,
    llm: LLMResource,
    formats: Sequence[str],
    options: BlendSettings,
) -> BlendExports:
    """A blend's manifest exported in each of `formats` (parquet shards per phase, Megatron
    indexed datasets), the model's tokenizer counting and encoding the rows."""
    out = export_dir(settings, manifest.blend)
    exports = BlendExports(out)
    if "parquet" in formats:
        count = token_counter(llm.model_path())
        exports.parquet = export_blend(
            manifest,
            out,
            count,
            data_dir=settings.data_dir,
            options=options,
            length_buckets=settings.length_buckets,
        )
    if "megatron" in formats:
        from mind_assets.blends.megatron import MEGATRON_DIRNAME, export_megatron

        exports.megatron = export_megatron(
            manifest,
            out / MEGATRON_DIRNAME,
            load_tokenizer(llm.model_path()),
            tokenizer_name=llm.model_name,
            data_dir=settings.data_dir,
        )
    return exports


def _export_data_version(directory: Path) -> DataVersion:
    """The hash of every file the export holds, by relative path."""
    digest = hashlib.sha256()
    for path in files_under(directory, "**/*"):
        digest.update(f"{path.relative_to(directory)}:{output_sha256(path)}\n".encode())
    return DataVersion(digest.hexdigest()[:24])


@asset(
    partitions_def=blend_partitions,
    deps=[blend_manifest],
    group_name="blends",
    kinds={"parquet"},
    code_version="1",
    description="The blend's mixed data, sampled by its manifest: shuffled parquet shards per "
    "phase (what `mind trace` reads) and, with MIND_BLENDS__EXPORT_FORMATS, Megatron indexed "
    "datasets with a --data-path list per phase.",
)
def blend_export(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    settings = get_settings()
    manifest = load_manifest(settings, context.partition_key)
    exports = write_blend_exports(
        settings, manifest, llm, settings.blends.export_formats, settings.blends
    )
    for line in exports.lines():
        context.log.info(line)
    per_phase = [
        {"phase": phase, "rows": rows, "tokens": exports.parquet.tokens[phase]}
        for phase, rows in (exports.parquet.rows if exports.parquet else {}).items()
    ]
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(exports.directory)),
            "formats": MetadataValue.json(list(settings.blends.export_formats)),
            "rows": sum(r["rows"] for r in per_phase),
            "phases": MetadataValue.md(markdown_table(per_phase)),
        },
        data_version=_export_data_version(exports.directory),
    )
