"""Diversity per target: G-Vendi over gradient features, with distinct-n and embedding-Vendi
baselines."""

from datetime import UTC, datetime

import pyarrow as pa
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    DynamicPartitionsDefinition,
    MaterializeResult,
    asset,
)

from mind_assets.blends.assets import blend_manifest
from mind_assets.conversations.assets import conversations
from mind_assets.diversity.scores import vendi_score
from mind_assets.diversity.targets import baseline_scores, parse_target, subsample, target_samples
from mind_assets.llm.features import features_for
from mind_assets.math_traces.assets import solution_traces
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import get_settings
from mind_assets.task_qa.assets import task_qa

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
)
def diversity(context: AssetExecutionContext) -> MaterializeResult:
    """G-Vendi (Vendi score of projected proxy-model gradients on the completion tokens) of one
    target — conversations:<shard>:<style>, task_qa:<family>, solution_traces:<source>:<mode> or
    blend:<blend>:<phase> — with distinct-n and all-MiniLM-L6-v2 embedding Vendi baselines.
    Features are cached per row.
    """
    settings = get_settings()
    target = context.partition_key
    kind, _ = parse_target(target)
    samples = subsample(
        target_samples(settings.data_dir, target), settings.diversity.max_samples, settings.seed
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


def register_targets(instance, targets: list[str]) -> list[str]:
    """Validate target names and add them to the `diversity_targets` partitions."""
    for target in targets:
        parse_target(target)
    instance.add_dynamic_partitions(DIVERSITY_TARGETS, targets)
    return targets
