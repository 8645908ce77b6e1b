"""Assembles the code location: every asset, check, resource, schedule and sensor."""

from __future__ import annotations

from dagster import (
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    ExecutorDefinition,
)

from mind_assets.blends.assets import blend_export, blend_manifest
from mind_assets.conversations.assets import conversations
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.sensors import corpus_inbox_sensor
from mind_assets.diversity.assets import diversity
from mind_assets.filtering.assets import filtered_conversations, longest_conversations
from mind_assets.llm.resource import LLMResource
from mind_assets.math_traces.assets import math_problems, problem_difficulty, solution_traces
from mind_assets.operations.schedules import (
    nightly_blend_rebuild,
    regenerate_unsynced_conversations,
)
from mind_assets.operations.versions import VERSION_SOURCE_ASSETS
from mind_assets.publish.assets import published_dataset
from mind_assets.settings import MindSettings, get_settings
from mind_assets.task_qa.assets import prismatic_task_qa, task_qa, task_seed_catalog, task_seeds

ASSETS = [
    *VERSION_SOURCE_ASSETS,
    raw_documents,
    chunks,
    conversations,
    filtered_conversations,
    longest_conversations,
    task_seed_catalog,
    task_seeds,
    task_qa,
    math_problems,
    problem_difficulty,
    solution_traces,
    blend_manifest,
    blend_export,
    published_dataset,
    diversity,
    prismatic_task_qa,
]


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
        resources={"llm": LLMResource.from_settings(settings)},
        executor=step_executor(settings),
        sensors=[corpus_inbox_sensor, default_automation_condition_sensor],
        schedules=[nightly_blend_rebuild, regenerate_unsynced_conversations],
    )


defs = build_definitions()
