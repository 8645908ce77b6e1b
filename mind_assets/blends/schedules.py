"""The blends stage's schedule: every blend manifest rebuilt nightly from the latest
materializations."""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from mind_assets.blends.assets import blend_manifest, blend_partitions


@schedule(
    cron_schedule="0 3 * * *",
    target=[blend_manifest],
    default_status=DefaultScheduleStatus.STOPPED,
    description="Rebuild every blend manifest nightly (03:00) from the latest materializations.",
)
def nightly_blend_rebuild(context: ScheduleEvaluationContext):
    return [
        RunRequest(
            run_key=f"blend:{key}:{context.scheduled_execution_time:%Y%m%d}", partition_key=key
        )
        for key in blend_partitions.get_partition_keys()
    ]
