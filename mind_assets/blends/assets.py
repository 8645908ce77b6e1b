"""`blend_manifest` and `blend_export`: one partition per blend spec in `blends/`. Each manifest
build is a new immutable version of the blend (`blends/versions.py`); an export writes one
version in every requested format at once (`blends/release.py`)."""

import hashlib
from collections.abc import Sequence
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

from mind_assets.blends.families import BLEND_SOURCES, BLENDED_STAGES
from mind_assets.blends.gates import DATA_VERSION_TAG, blocking_checks, instance_gate
from mind_assets.blends.lineage import audit_markdown, removal_rows, stale_inputs
from mind_assets.blends.manifest import (
    Manifest,
    MaterializationLookup,
    build_manifest,
    manifest_table,
    megatron_weights,
)
from mind_assets.blends.release import BlendExports, release_dir, write_release
from mind_assets.blends.spec import blend_names, blend_spec_path, check_selection, load_blend_spec
from mind_assets.blends.versions import (
    BlendRef,
    current_version_id,
    load_manifest_version,
    save_manifest_version,
)
from mind_assets.decontamination.assets import benchmark_index
from mind_assets.decontamination.steps import current_index_version
from mind_assets.lib.report import markdown_table
from mind_assets.lib.storage import (
    blend_export_dir,
    blend_manifest_dir,
    files_under,
    output_sha256,
    write_parquet_atomic,
    write_text_atomic,
)
from mind_assets.lib.tokenizer import load_tokenizer, token_counter
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import BlendSettings, MindSettings, get_settings

blend_partitions = StaticPartitionsDefinition(blend_names(get_settings().blends_dir) or ["example"])


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


def load_manifest(settings: MindSettings, ref: str) -> Manifest:
    """The manifest `ref` names: `blend` (its current version) or `blend@version`."""
    return load_manifest_version(settings.data_dir, BlendRef.parse(ref))


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
        gate=instance_gate(instance, blocking_checks(BLENDED_STAGES)),
        required=current_index_version(settings),
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
    """Write the manifest as the blend's new version (and move the blend's current pointer to
    it), then its parquet twin and per-phase Megatron weights beside it; sets
    `manifest.version`."""
    directory = manifest_dir(settings, manifest.blend)
    version = save_manifest_version(settings.data_dir, manifest)
    parquet_path = write_parquet_atomic(manifest_table(manifest), directory / "manifest.parquet")
    for phase, weights in megatron_weights(manifest).items():
        write_text_atomic(weights + "\n", directory / f"{phase}.megatron.txt")
    return {"json": version, "parquet": parquet_path}


@asset(
    partitions_def=blend_partitions,
    deps=[
        *(
            AssetDep(AssetKey(name), partition_mapping=AllPartitionMapping())
            for name in BLEND_SOURCES
        ),
        benchmark_index,
    ],
    group_name="blends",
    kinds={"json", "parquet"},
    code_version="1",
    description="A blend spec resolved to exact files, token counts, per-source weights and "
    "epochs (capped sources redistributed), upstream materializations pinned, and the prompts, "
    "models and sampling parameters behind every source. A source partition never checked "
    "against the current benchmark index is left out (or refused, with on_failed_check: fail); "
    "each file records the index it was checked against.",
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
    context.log.info("blend %s: %s", manifest.ref, per_source)
    for excluded in manifest.excluded:
        context.log.warning(
            "left out of %s: %s[%s] (%s)",
            manifest.ref,
            excluded["asset"],
            excluded["partition"],
            "; ".join(excluded["checks"]),
        )
    return MaterializeResult(
        metadata={
            "version": manifest.ref,
            "path": MetadataValue.path(str(paths["json"])),
            "parquet": MetadataValue.path(str(paths["parquet"])),
            "files": sum(len(s.files) for p in manifest.phases for s in p.sources),
            "total_tokens": manifest.total_tokens,
            "sources": MetadataValue.md(markdown_table(per_source)),
            "lineage_audit": MetadataValue.md(audit_markdown(manifest, settings.data_dir)),
            "benchmark_index": manifest.decontamination.get("version", "off"),
            "removed_per_benchmark": MetadataValue.md(
                markdown_table(removal_rows(manifest, settings.data_dir)) or "_none_"
            ),
            "upstream_partitions": len(manifest.upstream()),
            "stale_inputs_at_build": len(stale_inputs(manifest, instance_lookup(context.instance))),
            "excluded_by_checks": MetadataValue.md(
                markdown_table(
                    [
                        {
                            **{k: e[k] for k in ("source", "asset", "partition")},
                            "checks": "; ".join(e["checks"]),
                        }
                        for e in manifest.excluded
                    ]
                )
                or "_none_"
            ),
        },
        data_version=DataVersion(manifest.version),
    )


def write_blend_exports(
    settings: MindSettings,
    manifest: Manifest,
    llm: LLMResource,
    formats: Sequence[str],
    options: BlendSettings,
) -> BlendExports:
    """A blend version exported in each of `formats` (parquet shards per phase, Megatron
    indexed datasets) into its export folder at once, the model's tokenizer counting and
    encoding the rows."""
    current = current_version_id(settings.data_dir, manifest.blend)
    return write_release(
        manifest,
        release_dir(settings.data_dir, manifest, current),
        data_dir=settings.data_dir,
        formats=formats,
        options=options,
        length_buckets=settings.length_buckets,
        count_tokens=lambda: token_counter(llm.model_path()),
        tokenizer=lambda: load_tokenizer(llm.model_path()),
        tokenizer_name=llm.model_name,
    )


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
            "version": manifest.ref,
            "path": MetadataValue.path(str(exports.directory)),
            "formats": MetadataValue.json(list(settings.blends.export_formats)),
            "rows": sum(r["rows"] for r in per_phase),
            "phases": MetadataValue.md(markdown_table(per_phase)),
        },
        data_version=_export_data_version(exports.directory),
    )
