"""`collect_garbage`: `mind gc --apply` as a Dagster job with a daily schedule, off until switched
on, for deployments that want the data root (and its bucket) kept clean without a cron job of
their own. What it deletes, and what it never deletes, is `blends/gc.py`'s business."""

from dagster import DefaultScheduleStatus, OpExecutionContext, ScheduleDefinition, job, op

from mind_assets.blends.gc import collect, format_garbage, parse_duration
from mind_assets.settings import get_settings


@op(
    description="Delete the versions and leftovers nothing needs, older than "
    "MIND_BLENDS__GC_OLDER_THAN."
)
def collect_garbage(context: OpExecutionContext) -> None:
    settings = get_settings()
    garbage = collect(
        settings.data_dir,
        parse_duration(settings.blends.gc_older_than),
        apply=True,
        keep=settings.blends.keep_versions,
    )
    context.log.info(format_garbage(garbage, settings.data_dir, applied=True))


@job(description="`mind gc --apply` over the data root and, when it is in one, the object store.")
def garbage_collection():
    collect_garbage()


garbage_collection_schedule = ScheduleDefinition(
    name="collect_garbage_daily",
    job=garbage_collection,
    cron_schedule="30 4 * * *",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Daily at 04:30 (after the nightly blend rebuild): `mind gc --apply` with "
    "MIND_BLENDS__GC_OLDER_THAN as the age floor.",
)
