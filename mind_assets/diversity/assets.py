"""Diversity per target (G-Vendi over gradient features, with distinct-n and embedding-Vendi
baselines), and Prismatic filtering of generated task Q&A toward under-represented clusters."""

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from mind_assets.blends.assets import blend_manifest
from mind_assets.conversations.assets import conversations
from mind_assets.diversity.features import cluster_task_seeds, features_for
from mind_assets.diversity.prismatic import cluster_shares, prismatic_filter
from mind_assets.diversity.scores import vendi_score
from mind_assets.diversity.stage import (
    Sample,
    baseline_scores,
    parse_target,
    subsample,
    target_samples,
)
from mind_assets.lib.metadata import file_data_version
from mind_assets.lib.storage import asset_path, read_output, write_parquet_version
from mind_assets.math_traces.assets import solution_traces
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import get_settings
from mind_assets.task_qa.assets import task_families_partitions, task_qa, task_seeds
from mind_assets.task_qa.schema import TASK_QA_QUARANTINE_SCHEMA, TASK_QA_SCHEMA

DIVERSITY_TARGETS = "diversity_targets"
diversity_targets_partitions = DynamicPartitionsDefinition(name=DIVERSITY_TARGETS)


@asset(
    partitions_def=diversity_targets_partitions,
    deps=[
        AssetDep(dep, partition_mapping=AllPartitionMapping())
        for dep in (conversations, task_qa, solution_traces, blend_manifest)
    ],
    group_name="diversity",
    kinds={"torch", "duckdb"},
    code_version="1",
    description="G-Vendi (Vendi score of projected proxy-model gradients on the completion "
    "tokens) of one target — conversations:<shard>:<style>, task_qa:<family>, "
    "solution_traces:<source>:<mode> or blend:<blend>:<phase> — with distinct-n and "
    "all-MiniLM-L6-v2 embedding Vendi baselines. Features are cached per row.",
)
def diversity(context: AssetExecutionContext) -> MaterializeResult:
    settings = get_settings()
    target = context.partition_key
    kind, _ = parse_target(target)
    samples = subsample(
        target_samples(settings.data_dir, target), settings.diversity_max_samples, settings.seed
    )
    if len(samples) < 2:
        raise ValueError(f"diversity target {target!r} has {len(samples)} rows; need at least 2")
    config, cached = features_for(settings, samples, target.replace(":", "__"), context.log)
    g_vendi = vendi_score(cached.features)
    baselines = baseline_scores(samples)
    store = metrics_store(settings.data_dir)
    store.replace_partition(
        "diversity_scores",
        {"target": target, "run_id": context.run.run_id},
        pa.Table.from_pylist(
            [
                {
                    "target": target,
                    "run_id": context.run.run_id,
                    "kind": kind,
                    "samples": len(samples),
                    "g_vendi": g_vendi,
                    **baselines,
                    "feature_config": config.describe(),
                    "recorded_at": datetime.now(UTC),
                }
            ]
        ),
    )
    stats = cached.stats
    return MaterializeResult(
        metadata={
            "g_vendi": round(g_vendi, 4),
            "g_vendi_per_sample": round(g_vendi / len(samples), 4),
            "embedding_vendi": baselines["embedding_vendi"],
            "distinct_2": baselines["distinct_2"],
            "distinct_3": baselines["distinct_3"],
            "samples": len(samples),
            "features_computed": cached.computed,
            "features_reused": cached.reused,
            "feature_config": config.describe(),
            **(
                {
                    "gradient_samples_per_s": round(stats.samples_per_s, 2),
                    "peak_rss_mb": round(stats.peak_rss_mb, 1),
                }
                if stats
                else {}
            ),
        }
    )


@asset(
    partitions_def=task_families_partitions,
    deps=[task_seeds, task_qa],
    group_name="diversity",
    kinds={"torch", "parquet"},
    code_version="1",
    description="Prismatic filter mode on generated task Q&A: spherical k-means (k = 10% of the "
    "pool) over the gradient features of the family's seeds and kept items; new items are kept "
    "only when they land in the smaller clusters. Every row records its cluster and the reason.",
)
def prismatic_task_qa(context: AssetExecutionContext) -> MaterializeResult:
    settings = get_settings()
    family = context.partition_key
    seeds = read_output(asset_path(settings.data_dir, "task_seeds", family)).to_pylist()
    items = read_output(asset_path(settings.data_dir, "task_qa", family))
    new = [
        Sample(r["qa_id"], r["question"] or "", r["text"] or "")
        for r in items.select(["qa_id", "question", "text"]).to_pylist()
    ]
    clustering = cluster_task_seeds(settings, family, seeds, context.log)
    _, new_features = features_for(settings, new, f"task_qa__{family}", context.log)
    decisions = prismatic_filter(
        clustering, new_features.features, settings.prismatic_keep_fraction
    )
    favoured = clustering.smallest(settings.prismatic_keep_fraction)
    labels = np.array([d.cluster_id for d in decisions])
    before = cluster_shares(labels, favoured)
    after = (
        cluster_shares(labels[[d.kept for d in decisions]], favoured)
        if any(d.kept for d in decisions)
        else 0.0
    )
    rows = items.to_pylist()
    kept, dropped = [], []
    for row, decision in zip(rows, decisions, strict=True):
        row = {**row, "prismatic_cluster": decision.cluster_id, "selection_reason": decision.reason}
        (kept if decision.kept else dropped).append(row)
    schema = prismatic_schema(TASK_QA_SCHEMA)
    out = write_parquet_version(
        pa.Table.from_pylist(kept, schema=schema),
        asset_path(settings.data_dir, "prismatic_task_qa", family),
    )
    write_parquet_version(
        pa.Table.from_pylist(
            [{**r, "rejected_by": ["prismatic_over_represented"]} for r in dropped],
            schema=prismatic_schema(TASK_QA_QUARANTINE_SCHEMA),
        ),
        asset_path(settings.data_dir, "prismatic_task_qa", family, suffix=".quarantine.parquet"),
    )
    return MaterializeResult(
        metadata={
            "pool": len(seeds),
            "clusters": clustering.k,
            "cluster_sizes": MetadataValue.json(sorted(int(s) for s in clustering.sizes)),
            "new_items": len(new),
            "kept": len(kept),
            "share_in_small_clusters_before": round(before, 4),
            "share_in_small_clusters_after": round(after, 4),
            "path": MetadataValue.path(str(out)),
        },
        data_version=file_data_version(out),
    )


def prismatic_schema(base: pa.Schema) -> pa.Schema:
    return base.append(pa.field("prismatic_cluster", pa.int32())).append(
        pa.field("selection_reason", pa.string())
    )


def register_targets(instance, targets: list[str]) -> list[str]:
    """Validate target names and add them to the `diversity_targets` partitions."""
    for target in targets:
        parse_target(target)
    instance.add_dynamic_partitions(DIVERSITY_TARGETS, targets)
    return targets
