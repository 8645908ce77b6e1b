"""`blend_manifest`: one partition per blend spec in `blends/`."""

from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)

from mind_assets.blends.families import BLEND_SOURCES
from mind_assets.blends.lineage import audit_markdown, stale_inputs
from mind_assets.blends.manifest import (
    Manifest,
    MaterializationLookup,
    build_manifest,
    manifest_table,
    megatron_weights,
)
from mind_assets.blends.spec import blend_names, check_selection, load_blend_spec
from mind_assets.lib.metadata import file_data_version, markdown_table
from mind_assets.lib.storage import (
    asset_path,
    atomic_path,
    write_json_atomic,
    write_parquet_atomic,
)
from mind_assets.lib.tokenizer import token_counter
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import MindSettings, get_settings

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


def manifest_dir(settings: MindSettings, blend: str):
    return asset_path(settings.data_dir, "blend_manifest", blend, suffix="")


def resolve_blend(
    settings: MindSettings, instance: DagsterInstance, blend: str, llm: LLMResource
) -> Manifest:
    path = settings.blends_dir / f"{blend}.yaml"
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
    json_path = write_json_atomic(manifest.to_json(), directory / "manifest.json")
    parquet_path = write_parquet_atomic(manifest_table(manifest), directory / "manifest.parquet")
    for phase, weights in megatron_weights(manifest).items():
        with atomic_path(directory / f"{phase}.megatron.txt") as tmp:
            tmp.write_text(weights + "\n")
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
