"""`mind demo`: the main job end to end on the bundled demo corpus and the embedded model.

Runs in-process against the local instance, so the runs show up in `make ui` afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources as package_resources
from pathlib import Path

import pyarrow.parquet as pq
from dagster import MultiPartitionKey, materialize

from mind_assets.conversations.assets import conversations, mind_prompts
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.shards import make_shard_spec
from mind_assets.definitions import ASSETS
from mind_assets.filtering.assets import filtered_conversations, longest_conversations
from mind_assets.lib.instance import local_instance, register_shard
from mind_assets.lib.storage import asset_path
from mind_assets.llm.embedded_model import prepare_embedded_model
from mind_assets.llm.offline_engine import release_engines
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import EMBEDDED_MODEL, get_settings

DEMO_SHARD = "demo"
DEMO_STYLES = ("teacher_student",)
DEMO_MAX_TOKENS = 384


def demo_corpus_path() -> Path:
    return Path(str(package_resources.files("mind_assets.corpus") / "demo_corpus.jsonl"))


@dataclass
class DemoSummary:
    shard: str
    documents: int = 0
    chunks: int = 0
    conversations: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def run_demo(
    styles: tuple[str, ...] = DEMO_STYLES, echo: Callable[[str], None] = print
) -> DemoSummary:
    started = time.monotonic()
    # Assets read their settings from the environment, so the demo's defaults go there.
    # One process runs several in-process Dagster runs: keep the engine loaded between them.
    os.environ.setdefault("MIND_KEEP_ENGINE_BETWEEN_RUNS", "1")
    os.environ.setdefault("MIND_MAX_TOKENS", str(DEMO_MAX_TOKENS))
    settings = get_settings()
    instance = local_instance(settings)
    if settings.model == EMBEDDED_MODEL:
        echo(f"embedded model: {prepare_embedded_model(settings.models_dir)}")
    register_shard(instance, settings, make_shard_spec(DEMO_SHARD, [str(demo_corpus_path())]))
    resources = {"llm": LLMResource.from_settings(settings)}
    summary = DemoSummary(shard=DEMO_SHARD)
    try:
        # Record the prompt versions so later prompt edits show up as unsynced partitions.
        materialize(ASSETS, selection=[mind_prompts], instance=instance, resources=resources)
        echo("materializing raw_documents and chunks for shard 'demo' ...")
        materialize(
            ASSETS,
            selection=[raw_documents, chunks],
            partition_key=DEMO_SHARD,
            instance=instance,
            resources=resources,
        )
        for style in styles:
            key = MultiPartitionKey({"shard": DEMO_SHARD, "style": style})
            echo(f"materializing conversations and filtered_conversations demo/{style} ...")
            materialize(
                ASSETS,
                selection=[conversations],
                partition_key=key,
                instance=instance,
                resources=resources,
            )
            # A failed blocking check (e.g. nothing kept) is reported, not fatal, in the demo.
            filtered = materialize(
                ASSETS,
                selection=[filtered_conversations],
                partition_key=key,
                instance=instance,
                resources=resources,
                raise_on_error=False,
            )
            summary.failed_checks += [
                f"{style}: {e.check_name}"
                for e in filtered.get_asset_check_evaluations()
                if not e.passed
            ]
        materialize(
            ASSETS,
            selection=[longest_conversations],
            partition_key=DEMO_SHARD,
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
    finally:
        release_engines()
    data_dir = settings.data_dir
    summary.paths["raw_documents"] = asset_path(data_dir, "raw_documents", DEMO_SHARD)
    summary.paths["chunks"] = asset_path(data_dir, "chunks", DEMO_SHARD)
    summary.documents = pq.read_metadata(summary.paths["raw_documents"]).num_rows
    summary.chunks = pq.read_metadata(summary.paths["chunks"]).num_rows
    for style in styles:
        path = asset_path(data_dir, "conversations", DEMO_SHARD, style)
        summary.paths[f"conversations/{style}"] = path
        summary.conversations[style] = pq.read_metadata(path).num_rows
        kept = asset_path(data_dir, "filtered_conversations", DEMO_SHARD, style)
        summary.accepted[style] = pq.read_metadata(kept).num_rows if kept.exists() else 0
    summary.paths["metrics"] = data_dir / "metrics.duckdb"
    summary.seconds = time.monotonic() - started
    return summary


def format_summary(summary: DemoSummary) -> str:
    lines = [
        f"demo finished in {summary.seconds:.0f} s",
        f"  raw_documents: {summary.documents} documents",
        f"  chunks:        {summary.chunks} chunks",
    ]
    lines += [
        f"  conversations/{s}: {n} generated, {summary.accepted.get(s, 0)} kept by the filters"
        for s, n in summary.conversations.items()
    ]
    if summary.failed_checks:
        lines.append("  failed asset checks: " + ", ".join(summary.failed_checks))
    lines.append("outputs:")
    lines += [f"  {name}: {path}" for name, path in summary.paths.items()]
    lines.append("quality metrics: `mind metrics` (DuckDB at the metrics path above)")
    lines.append("open the UI with `make ui`, then http://127.0.0.1:3000 (Assets -> conversations)")
    return "\n".join(lines)
