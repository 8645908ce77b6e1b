"""Assembles the code location from what the stages export (`lib/stages.py` finds them): every
asset, check, schedule and sensor, the engine's version source, the cross-stage schedules and the
one resource."""

from __future__ import annotations

from dagster import (
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    ExecutorDefinition,
)

from mind_assets.lib.stages import discover_stages
from mind_assets.llm.resource import LLMResource
from mind_assets.llm.versions import llm_config
from mind_assets.operations.garbage import garbage_collection_schedule
from mind_assets.operations.schedules import REGENERATION_SCHEDULES
from mind_assets.settings import MindSettings, get_settings

STAGES = discover_stages()
ASSETS = [llm_config, *(asset for stage in STAGES for asset in stage.assets)]


# Declarative automation is evaluated by this sensor (off until switched on, in the UI or here).
default_automation_condition_sensor = AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target="*",
    default_status=DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
)


def step_executor(settings: MindSettings) -> ExecutorDefinition | None:
    """Dagster's default executor, or with MIND_K8S__EXECUTOR=k8s_job a Kubernetes Job per step,
    so the `llm` pool's steps get the GPUs their `dagster-k8s/config` tags ask for."""
    if settings.k8s.executor != "k8s_job":
        return None
    # Only deployments on Kubernetes install dagster-k8s (deploy/README.md).
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


def build_definitions() -> Definitions:
    settings = get_settings()
    return Definitions(
        assets=ASSETS,
        asset_checks=[check for stage in STAGES for check in stage.asset_checks],
        resources={"llm": LLMResource.from_settings(settings)},
        executor=step_executor(settings),
        sensors=[
            *(sensor for stage in STAGES for sensor in stage.sensors),
            default_automation_condition_sensor,
        ],
        schedules=[
            *(schedule for stage in STAGES for schedule in stage.schedules),
            *REGENERATION_SCHEDULES,
            garbage_collection_schedule,
        ],
    )


defs = build_definitions()
