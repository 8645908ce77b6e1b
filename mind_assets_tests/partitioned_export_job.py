"""blend_export in two part steps and a last step, as a job Dagster can rebuild in each step's
own process (`dagster.reconstructable` needs a module-level function)."""

from __future__ import annotations

from dagster import Definitions, JobDefinition, define_asset_job, multiprocess_executor

from mind_assets.blends.assets import blend_export_asset
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import get_settings


def partitioned_export_job() -> JobDefinition:
    export = blend_export_asset(get_settings().blends.export_steps)
    job = define_asset_job(
        "partitioned_export",
        selection=[export],
        executor_def=multiprocess_executor,
        partitions_def=export.partitions_def,
    )
    definitions = Definitions(
        assets=[export], jobs=[job], resources={"llm": LLMResource.from_settings(get_settings())}
    )
    return definitions.resolve_job_def("partitioned_export")
