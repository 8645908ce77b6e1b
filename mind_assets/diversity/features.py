"""Gradient features with the configured proxy model, loaded once per process and cached on
disk per row (see `stage.cached_features`)."""

from __future__ import annotations

import logging

from mind_assets.diversity.gradients import FeatureConfig, GradientFeaturizer
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
