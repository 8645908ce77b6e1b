"""Gradient features with the configured proxy model, loaded once per process and cached on
disk per row (see `stage.cached_features`)."""

from __future__ import annotations

import logging

from mind_assets.diversity.gradients import FeatureConfig, GradientFeaturizer
from mind_assets.diversity.prismatic import Clustering, spherical_kmeans
from mind_assets.diversity.stage import CachedFeatures, Sample, cached_features, config_key
from mind_assets.lib.storage import asset_path
from mind_assets.llm.embedded_model import prepare_embedded_model
from mind_assets.settings import EMBEDDED_MODEL, MindSettings

_FEATURIZERS: dict[FeatureConfig, GradientFeaturizer] = {}


def feature_config(settings: MindSettings) -> FeatureConfig:
    model = settings.diversity_proxy_model
    if model == EMBEDDED_MODEL:
        model = str(prepare_embedded_model(settings.models_dir))
    return FeatureConfig(
        model_path=model,
        last_blocks=settings.diversity_last_blocks or None,
        dim=settings.diversity_dim,
        seed=settings.seed,
        max_tokens=settings.diversity_max_tokens,
        batch_size=settings.diversity_batch_size,
    )


def featurizer(config: FeatureConfig) -> GradientFeaturizer:
    """One proxy model per configuration and process."""
    if config not in _FEATURIZERS:
        _FEATURIZERS[config] = GradientFeaturizer(config)
    return _FEATURIZERS[config]


def features_for(
    settings: MindSettings, samples: list[Sample], cache_name: str, logger: logging.Logger
) -> tuple[FeatureConfig, CachedFeatures]:
    """Gradient features of `samples`, cached under diversity_features/<cache_name>.parquet."""
    config = feature_config(settings)

    def compute(pairs):
        model = featurizer(config)
        logger.info(
            "gradient features for %d samples: %s, %d parameters",
            len(pairs),
            config.describe(),
            model.n_params,
        )
        return model.features(
            pairs,
            progress=lambda done, total, s: logger.info(
                "gradient features %d/%d (%.1f samples/s)", done, total, done / max(s, 1e-6)
            ),
        )

    cache = asset_path(settings.data_dir, "diversity_features", cache_name)
    return config, cached_features(samples, cache, config_key(config), compute)


def cluster_task_seeds(
    settings: MindSettings, family: str, seeds: list[dict], logger: logging.Logger
) -> Clustering:
    """The Prismatic pool of a task family: its seeds' gradient features (question as prompt,
    answer as completion), clustered by spherical k-means with k = the configured share."""
    pool = [Sample(f"seed:{s['seed_id']}", s["question"], str(s["answer"])) for s in seeds]
    _, cached = features_for(settings, pool, f"task_seeds__{family}", logger)
    k = max(1, round(settings.prismatic_cluster_fraction * len(pool)))
    logger.info("prismatic pool for %s: %d seeds in %d clusters", family, len(pool), k)
    return spherical_kmeans(cached.features, k, seed=settings.seed)
