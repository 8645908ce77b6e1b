"""Assembles the code location: every asset, check, resource, schedule and sensor."""

from __future__ import annotations

from dagster import Definitions

from mind_assets.blends.assets import blend_manifest
from mind_assets.conversations.assets import conversations, mind_prompts
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.filtering.assets import filtered_conversations, longest_conversations
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import get_settings
from mind_assets.task_qa.assets import task_qa, task_seed_catalog, task_seeds

ASSETS = [
    raw_documents,
    chunks,
    mind_prompts,
    conversations,
    filtered_conversations,
    longest_conversations,
    task_seed_catalog,
    task_seeds,
    task_qa,
    blend_manifest,
]


def build_definitions() -> Definitions:
    return Definitions(
        assets=ASSETS,
        resources={"llm": LLMResource.from_settings(get_settings())},
    )


defs = build_definitions()
