"""`published_dataset`: one partition per blend, the folder `mind publish` writes."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from mind_assets.blends.assets import blend_manifest, blend_partitions
from mind_assets.lib.tokenizer import token_counter
from mind_assets.llm.resource import LLMResource
from mind_assets.publish.dataset import publish_blend
from mind_assets.settings import get_settings


@asset(
    partitions_def=blend_partitions,
    deps=[blend_manifest],
    group_name="blends",
    kinds={"parquet", "huggingface"},
    code_version="1",
    description="The blend as a Hugging Face dataset folder (one config per phase) with a "
    "dataset card generated from its lineage; exported first when the export is missing or "
    "older than the manifest. Uploading stays a deliberate `mind publish --repo-id`.",
)
def published_dataset(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    settings = get_settings()
    report = publish_blend(
        context.partition_key,
        data_dir=settings.data_dir,
        blends_dir=settings.blends_dir,
        prompts_dir=settings.prompts_dir,
        make_counter=lambda: token_counter(llm.model_path()),
        math_sources=settings.math.sources,
        export_options=settings.blends,
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(report.folder)),
            "card": MetadataValue.md((report.folder / "README.md").read_text()),
            "dagster/row_count": sum(report.rows.values()),
            "tokens": sum(report.tokens.values()),
            "exported_first": report.exported,
            **{f"rows/{phase}": rows for phase, rows in report.rows.items()},
        }
    )
