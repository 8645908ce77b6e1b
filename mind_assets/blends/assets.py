"""`blend_manifest` and `blend_export`: one partition per blend spec in `blends/`. Each manifest
build is a new immutable version of the blend (`blends/versions.py`); an export writes one
version in every requested format at once (`blends/release.py`)."""

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    DagsterInstance,
    DataVersion,
    In,
    MaterializeResult,
    MetadataValue,
    Nothing,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    StaticPartitionsDefinition,
    asset,
    graph_asset,
    op,
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
from mind_assets.blends.release import (
    BlendExports,
    ReleaseRequest,
    finish_release_parts,
    release_dir,
    write_release,
    write_release_parts,
)
from mind_assets.blends.spec import blend_names, blend_spec_path, check_selection, load_blend_spec
from mind_assets.blends.tokens import TokenCache
from mind_assets.blends.versions import (
    BlendRef,
    current_version_id,
    load_manifest_version,
    save_manifest_version,
)
from mind_assets.decontamination.assets import benchmark_index
from mind_assets.decontamination.steps import current_index_version
from mind_assets.lib.progress import Log
from mind_assets.lib.report import markdown_table
from mind_assets.lib.storage import (
    blend_export_dir,
    blend_manifest_dir,
    files_under,
    output_sha256,
    write_parquet_atomic,
    write_text_atomic,
)
from mind_assets.lib.tokenizer import HFTokenizer, resolve_tokenizer, worker_count
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


def blend_tokenizer(settings: MindSettings, llm: LLMResource, name: str | None) -> HFTokenizer:
    """The tokenizer a spec or manifest names (None: the engine model's); a directory is found
    relative to the blend specs' folder."""
    return resolve_tokenizer(
        name, engine_name=llm.model_name, engine_path=llm.model_path, base_dir=settings.blends_dir
    )


def token_cache(settings: MindSettings, tokenizer: HFTokenizer, log: Log | None) -> TokenCache:
    workers = worker_count(settings.blends.export_workers)
    return TokenCache(settings.data_dir, tokenizer, workers=workers, log=log)


def resolve_blend(
    settings: MindSettings,
    instance: DagsterInstance,
    blend: str,
    llm: LLMResource,
    log: Log | None = None,
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
        tokens=token_cache(settings, blend_tokenizer(settings, llm, spec.tokenizer), log),
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
)
def blend_manifest(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    """A blend spec resolved to exact files, token counts, per-source weights and epochs (capped
    sources redistributed), upstream materializations pinned, and the prompts, models and
    sampling parameters behind every source. A source partition never checked against the
    current benchmark index is left out (or refused, with on_failed_check: fail); each file
    records the index it was checked against.
    """
    settings = get_settings()
    blend = context.partition_key
    manifest = resolve_blend(settings, context.instance, blend, llm, context.log.info)
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


def release_request(
    settings: MindSettings,
    manifest: Manifest,
    llm: LLMResource,
    formats: Sequence[str],
    options: BlendSettings,
    log: Log | None = None,
) -> ReleaseRequest:
    """An export of a blend version in each of `formats` into its export folder, with the
    tokenizer its manifest counted with."""
    current = current_version_id(settings.data_dir, manifest.blend)
    return ReleaseRequest(
        manifest,
        release_dir(settings.data_dir, manifest, current),
        settings.data_dir,
        formats,
        options,
        settings.length_buckets,
        blend_tokenizer(settings, llm, manifest.tokenizer),
        log,
    )


def _export_data_version(directory: Path) -> DataVersion:
    """The hash of every file the export holds, by relative path."""
    digest = hashlib.sha256()
    for path in files_under(directory, "**/*"):
        digest.update(f"{path.relative_to(directory)}:{output_sha256(path)}\n".encode())
    return DataVersion(digest.hexdigest()[:24])


def _export_result(
    context: OpExecutionContext, manifest: Manifest, exports: BlendExports
) -> tuple[dict[str, Any], DataVersion]:
    """What a materialization of blend_export records, and its data version."""
    for line in exports.lines():
        context.log.info(line)
    per_phase = [
        {"phase": phase, "rows": rows, "tokens": exports.parquet.tokens[phase]}
        for phase, rows in (exports.parquet.rows if exports.parquet else {}).items()
    ]
    formats = get_settings().blends.export_formats
    metadata = {
        "version": manifest.ref,
        "path": MetadataValue.path(str(exports.directory)),
        "formats": MetadataValue.json(list(formats)),
        "rows": sum(r["rows"] for r in per_phase),
        "phases": MetadataValue.md(markdown_table(per_phase)),
    }
    return metadata, _export_data_version(exports.directory)


EXPORT_DESCRIPTION = (
    "The blend's mixed data, sampled by its manifest: shuffled parquet shards per phase (what "
    "`mind trace` reads) and, with MIND_BLENDS__EXPORT_FORMATS, Megatron indexed datasets with "
    "a --data-path list per phase, written in one streaming pass from the token cache."
)


def _configured_request(context: OpExecutionContext, llm: LLMResource) -> ReleaseRequest:
    settings = get_settings()
    manifest = load_manifest(settings, context.partition_key)
    formats = settings.blends.export_formats
    return release_request(settings, manifest, llm, formats, settings.blends, context.log.info)


def _one_step_export() -> AssetsDefinition:
    @asset(
        name="blend_export",
        partitions_def=blend_partitions,
        deps=[blend_manifest],
        group_name="blends",
        kinds={"parquet"},
        code_version="1",
        description=EXPORT_DESCRIPTION,
    )
    def blend_export(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
        request = _configured_request(context.op_execution_context, llm)
        exports = write_release(request)
        metadata, data_version = _export_result(
            context.op_execution_context, request.manifest, exports
        )
        return MaterializeResult(metadata=metadata, data_version=data_version)

    return blend_export


def _part_step(step: int, steps: int) -> OpDefinition:
    @op(
        name=f"export_part_{step}",
        ins={"manifest": In(Nothing)},
        out=Out(Nothing),
        description=f"Writes every {steps}th part of the export, from part {step}.",
    )
    def export_part(context: OpExecutionContext, llm: LLMResource) -> None:
        receipts = write_release_parts(_configured_request(context, llm), step, steps)
        context.log.info(f"step {step + 1} of {steps}: {len(receipts)} part(s) written")

    return export_part


@op(ins={"parts": In(Nothing)}, out=Out(Nothing))
def finish_export(context: OpExecutionContext, llm: LLMResource) -> Iterator[Output]:
    """Puts every part in place at once with the Megatron lists and summaries."""
    request = _configured_request(context, llm)
    exports = finish_release_parts(request)
    metadata, data_version = _export_result(context, request.manifest, exports)
    yield Output(None, metadata=metadata, data_version=data_version)


def _partitioned_export(steps: int) -> AssetsDefinition:
    parts = [_part_step(step, steps) for step in range(steps)]

    @graph_asset(
        name="blend_export",
        partitions_def=blend_partitions,
        ins={"blend_manifest": AssetIn(dagster_type=Nothing)},
        group_name="blends",
        kinds={"parquet"},
        code_version="1",
        description=f"{EXPORT_DESCRIPTION} Its parts are written by {steps} steps.",
    )
    def blend_export(blend_manifest: Any) -> Any:
        return finish_export([part(blend_manifest) for part in parts])

    return blend_export


def blend_export_asset(steps: int) -> AssetsDefinition:
    """blend_export as one step, or with MIND_BLENDS__EXPORT_STEPS > 1 as that many steps
    writing the parts (their own processes, or pods under the k8s_job executor) and a last one
    putting them in place: the same files either way."""
    return _one_step_export() if steps == 1 else _partitioned_export(steps)


blend_export = blend_export_asset(get_settings().blends.export_steps)
