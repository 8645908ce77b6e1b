"""`mind demo`: the whole graph on the bundled demo corpus and the embedded model.

Raw documents and chunks, all seven MIND styles and the rephrase baseline with filtering, the
longest-conversation set, one task-Q&A family from a bundled seed fixture, the example blend and
its export, then the blend's lineage audit. Runs in-process against the local instance, so the
runs show up in `make ui` afterwards.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources as package_resources
from pathlib import Path
from typing import Any

from dagster import MultiPartitionKey, materialize

from mind_assets.blends.assets import (
    blend_export,
    blend_manifest,
    export_dir,
    instance_lookup,
    load_manifest,
)
from mind_assets.blends.lineage import format_audit
from mind_assets.blends.manifest import MaterializationLookup
from mind_assets.blends.megatron import MEGATRON_DIRNAME
from mind_assets.conversations.assets import conversations
from mind_assets.conversations.outputs import CONVERSATIONS
from mind_assets.conversations.styles import STYLE_KEYS
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.outputs import CHUNKS, RAW_DOCUMENTS
from mind_assets.corpus.shard_specs import make_shard_spec
from mind_assets.corpus.shards import register_shard
from mind_assets.definitions import ASSETS
from mind_assets.filtering.assets import filtered_conversations, longest_conversations
from mind_assets.filtering.outputs import FILTERED_CONVERSATIONS
from mind_assets.lib.instance import local_instance
from mind_assets.lib.quarantine import rejections_per_rule
from mind_assets.lib.storage import blend_manifest_file, files_under, output_rows
from mind_assets.llm.embedded_model import prepare_embedded_model
from mind_assets.llm.offline_engine import release_engines
from mind_assets.llm.resource import LLMResource
from mind_assets.metrics.store import metrics_store
from mind_assets.operations.versions import VERSION_SOURCE_ASSETS
from mind_assets.settings import EMBEDDED_MODEL, MindSettings, get_settings
from mind_assets.task_qa.assets import task_qa, task_seed_catalog, task_seeds
from mind_assets.task_qa.outputs import TASK_QA

DEMO_SHARD = "demo"
DEMO_STYLES = STYLE_KEYS
DEMO_FAMILY = "gsm8k"
DEMO_BLEND = "example"
# Demo defaults, applied only where the environment does not set them already.
# Sized to finish in minutes on a 2-core CPU without native bf16 (the slowest machines it runs
# on); `mind demo --passages 30` and a larger MIND_MAX_TOKENS make a fuller run.
DEMO_ENVIRONMENT = {
    # One process runs many in-process Dagster runs: keep the engine loaded between them.
    "MIND_KEEP_ENGINE_BETWEEN_RUNS": "1",
    "MIND_MAX_TOKENS": "160",
    "MIND_TASK_QA__FAMILIES": json.dumps([DEMO_FAMILY]),
    "MIND_TASK_QA__ITEMS": "4",
    # The MIND paper's own filters (length and turn structure). The strict profile's extra
    # rules (truncation, repetition, faithfulness) reject nearly everything a 135M model writes
    # in 160 tokens, which would leave the demo's blend without a generated row.
    "MIND_FILTERS__PROFILE": "paper",
    # blend_export writes both formats, each row with its length bucket.
    "MIND_BLENDS__EXPORT_FORMATS": json.dumps(["parquet", "megatron"]),
    "MIND_BLENDS__EXPORT_BUCKET": "1",
    # Everything the demo reads is bundled, and no evaluation benchmark is: decontamination is
    # off (rows record that they were checked against nothing). A real run names benchmarks
    # and a mirror, or the hub (docs/decontamination.md).
    "HF_HUB_OFFLINE": "1",
    "MIND_DECONTAMINATION__BENCHMARKS": "[]",
}
DEMO_PASSAGES = 8  # of the 30 in the bundled corpus


def demo_corpus_path() -> Path:
    return Path(str(package_resources.files("mind_assets.corpus") / "demo_corpus.jsonl"))


def demo_task_mirror() -> Path:
    return Path(str(package_resources.files("mind_assets.task_qa") / "demo_mirror"))


@dataclass
class DemoSummary:
    shard: str
    documents: int = 0
    chunks: int = 0
    conversations: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)
    task_qa: tuple[int, int] = (0, 0)
    task_qa_rejections: Counter[str] = field(default_factory=Counter)
    # Tokens each blend source holds, summed over phases (`raw_documents`, `conversations`, ...).
    blend_tokens: dict[str, float] = field(default_factory=dict)
    export: dict[str, int] = field(default_factory=dict)
    blend_ref: str = ""  # example@<version>: the blend version built and exported
    audit: str = ""
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    filter_profile: str = ""

    @property
    def generated_blend_tokens(self) -> float:
        """Tokens of generated text in the demo's blend: 0 means the demo made nothing usable."""
        return sum(t for asset, t in self.blend_tokens.items() if asset != "raw_documents")


def run_demo(
    styles: tuple[str, ...] = DEMO_STYLES,
    echo: Callable[[str], None] = print,
    passages: int = DEMO_PASSAGES,
) -> DemoSummary:
    started = time.monotonic()
    # Assets read their settings from the environment, so the demo's defaults go there.
    for name, value in DEMO_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("MIND_TASK_MIRROR_DIR", str(demo_task_mirror()))
    settings = get_settings()
    instance = local_instance(settings)
    if settings.model == EMBEDDED_MODEL:
        echo(f"embedded model: {prepare_embedded_model(settings.models_dir)}")
    register_shard(
        instance,
        settings,
        make_shard_spec(DEMO_SHARD, [str(demo_corpus_path())], rows=f"0:{passages}"),
    )
    llm = LLMResource.from_settings(settings)
    summary = DemoSummary(shard=DEMO_SHARD)

    def run(selection, partition_key=None, raise_on_error=True):
        return materialize(
            ASSETS,
            selection=selection,
            partition_key=partition_key,
            instance=instance,
            resources={"llm": llm},
            raise_on_error=raise_on_error,
        )

    try:
        summary.failed_checks = materialize_the_graph(run, styles, echo)
    finally:
        release_engines()
    summarize_outputs(summary, settings, styles, instance_lookup(instance))
    summary.seconds = time.monotonic() - started
    return summary


def materialize_the_graph(
    run: Callable[..., Any], styles: tuple[str, ...], echo: Callable[[str], None]
) -> list[str]:
    """The main job, step by step, as a user would click it in the UI; returns the asset checks
    that failed (a failed blocking check of one style is reported, not fatal, in the demo)."""
    failed_checks = []
    # Record the prompt, model and threshold versions, so later edits show up as unsynced
    # partitions.
    for source in VERSION_SOURCE_ASSETS:
        run([source])
    echo("raw_documents and chunks for shard 'demo' ...")
    run([raw_documents, chunks], DEMO_SHARD)
    for style in styles:
        key = MultiPartitionKey({"shard": DEMO_SHARD, "style": style})
        echo(f"conversations and filtered_conversations demo/{style} ...")
        run([conversations], key)
        filtered = run([filtered_conversations], key, raise_on_error=False)
        failed_checks += [
            f"{style}: {e.check_name}"
            for e in filtered.get_asset_check_evaluations()
            if not e.passed
        ]
    run([longest_conversations], DEMO_SHARD)
    echo(f"task Q&A for {DEMO_FAMILY} from the bundled seed fixture ...")
    run([task_seed_catalog])
    run([task_seeds], DEMO_FAMILY)
    run([task_qa], DEMO_FAMILY)
    echo(f"blend manifest {DEMO_BLEND!r} and its export ...")
    run([blend_manifest], DEMO_BLEND)
    run([blend_export], DEMO_BLEND)
    return failed_checks


def summarize_outputs(
    summary: DemoSummary,
    settings: MindSettings,
    styles: tuple[str, ...],
    lookup: MaterializationLookup,
) -> None:
    """What the demo wrote, read back through the data-root gateway: rows per output, task
    Q&A's rejections, the blend's tokens per source, its export's rows per phase and its
    lineage audit."""
    data_dir = settings.data_dir
    summary.filter_profile = settings.filters.profile
    shard = {"shard": DEMO_SHARD}
    summary.paths["raw_documents"] = RAW_DOCUMENTS.path(data_dir, shard)
    summary.documents = output_rows(RAW_DOCUMENTS.path(data_dir, shard))
    summary.chunks = output_rows(CHUNKS.path(data_dir, shard))
    for style in styles:
        keys = {**shard, "style": style}
        summary.conversations[style] = output_rows(CONVERSATIONS.path(data_dir, keys))
        summary.accepted[style] = output_rows(FILTERED_CONVERSATIONS.path(data_dir, keys))
    summary.paths["conversations"] = data_dir / "conversations" / DEMO_SHARD
    summary.paths["filtered_conversations"] = data_dir / "filtered_conversations" / DEMO_SHARD
    family = {"family": DEMO_FAMILY}
    task_qa = TASK_QA.partition(data_dir, family)
    quarantine = task_qa.read_quarantine(columns=["rejected_by"])
    summary.task_qa = (output_rows(task_qa.path), quarantine.num_rows)
    summary.task_qa_rejections = rejections_per_rule(quarantine["rejected_by"].to_pylist())
    summary.paths["task_qa"] = TASK_QA.path(data_dir, family)
    manifest = load_manifest(settings, DEMO_BLEND)
    summary.blend_ref = manifest.ref
    for phase in manifest.phases:
        for source in phase.sources:
            summary.blend_tokens[source.asset] = (
                summary.blend_tokens.get(source.asset, 0.0) + source.tokens
            )
    out = export_dir(settings, DEMO_BLEND)
    summary.export = {
        phase.name: sum(output_rows(p) for p in files_under(out / phase.name, "*.parquet"))
        for phase in manifest.phases
    }
    summary.paths["blend_export_megatron"] = out / MEGATRON_DIRNAME
    summary.paths["blend_manifest"] = blend_manifest_file(data_dir, DEMO_BLEND)
    summary.paths["blend_export"] = out
    # The metrics are parquet files; metrics.duckdb is a copy of them for DuckDB clients.
    store = metrics_store(data_dir)
    store.rebuild_cache()
    summary.paths["metrics"] = store.cache_path
    summary.audit = format_audit(manifest, data_dir, lookup)


def format_summary(summary: DemoSummary) -> str:
    lines = [
        f"demo finished in {summary.seconds:.0f} s",
        f"  raw_documents: {summary.documents} documents; chunks: {summary.chunks}",
    ]
    lines += [
        f"  conversations/{s}: {n} generated, {summary.accepted.get(s, 0)} kept by the filters"
        for s, n in summary.conversations.items()
    ]
    if summary.failed_checks:
        lines.append("  failed asset checks: " + ", ".join(summary.failed_checks))
    lines.append(
        f"  filter profile: {summary.filter_profile} (MIND_FILTERS__PROFILE; `strict` adds the "
        "truncation, repetition and faithfulness rules, which reject nearly every conversation "
        "the embedded 135M model writes; real runs name an 8B-70B model with MIND_MODEL)"
    )
    lines.append(
        f"  task_qa/{DEMO_FAMILY}: {summary.task_qa[0]} rows kept, {summary.task_qa[1]} quarantined"
        + (
            " ("
            + ", ".join(f"{rule} {n}" for rule, n in summary.task_qa_rejections.most_common())
            + ")"
            if summary.task_qa_rejections
            else ""
        )
    )
    lines.append(
        "  blend tokens by source: "
        + ", ".join(f"{asset} {tokens:.0f}" for asset, tokens in summary.blend_tokens.items())
    )
    lines.append(f"  blend version: {summary.blend_ref}")
    lines.append(
        "  blend export: "
        + ", ".join(f"{phase} {rows} rows" for phase, rows in summary.export.items())
    )
    lines.append("outputs:")
    lines += [f"  {name}: {path}" for name, path in summary.paths.items()]
    lines.append(
        "quality metrics: `mind metrics`; trace a blend row: "
        f"`mind trace {summary.blend_ref or DEMO_BLEND}:phase1:0`; its versions: "
        f"`mind blends versions {DEMO_BLEND}`"
    )
    lines.append("open the UI with `make ui`, then http://127.0.0.1:3000 (Assets)")
    return "\n".join(lines)
