"""`published_dataset`: one partition per blend and per publishable asset, the folder `mind
publish` writes."""

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    StaticPartitionMapping,
    StaticPartitionsDefinition,
    asset,
)

from mind_assets.blends.assets import blend_manifest, blend_partitions, blend_tokenizer
from mind_assets.lib.tokenizer import token_counter
from mind_assets.llm.resource import LLMResource
from mind_assets.publish.dataset import PUBLISHABLE, publish
from mind_assets.settings import get_settings

_BLENDS = blend_partitions.get_partition_keys()
# A blend named like an asset is refused by `publish`; its partition is the asset's.
published_partitions = StaticPartitionsDefinition(
    [*_BLENDS, *(name for name in PUBLISHABLE if name not in _BLENDS)]
)


@asset(
    partitions_def=published_partitions,
    deps=[
        AssetDep(blend_manifest, partition_mapping=StaticPartitionMapping({b: b for b in _BLENDS})),
        *(
            AssetDep(AssetKey(name), partition_mapping=AllPartitionMapping())
            for name in PUBLISHABLE
        ),
    ],
    group_name="publish",
    kinds={"parquet", "huggingface"},
    code_version="2",
)
def published_dataset(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    """A blend (one config per phase) or an asset (the latest version of every materialized
    partition, one config per style, task family or source and mode) as a Hugging Face dataset
    folder with a dataset card generated from its lineage; a blend is exported first when its
    export is missing or older than the manifest. Uploading stays a deliberate `mind publish
    --repo-id`.
    """
    settings = get_settings()
    report = publish(
        context.partition_key,
        settings,
        lambda: token_counter(llm.model_path()),
        lambda name: blend_tokenizer(settings, llm, name),
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(report.folder)),
            "card": MetadataValue.md(report.card),
            "kind": report.kind,
            "dagster/row_count": sum(report.rows.values()),
            "tokens": sum(report.tokens.values()),
            "exported_first": report.exported,
            **{f"rows/{config}": rows for config, rows in report.rows.items()},
        }
    )
