"""Gradient features of a proxy model, cached on disk per row: the G-Vendi features of a
diversity target and the Prismatic pool of a task family. The proxy model is loaded once per
process and configuration."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mind_assets.lib.storage import (
    feature_cache_file,
    output_exists,
    read_output,
    write_parquet_atomic,
)
from mind_assets.llm.embedded_model import prepare_embedded_model
from mind_assets.llm.gradients import FeatureConfig, FeatureStats, GradientFeaturizer
from mind_assets.settings import EMBEDDED_MODEL, MindSettings

FEATURE_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("text_sha", pa.string(), nullable=False),
        pa.field("config_key", pa.string(), nullable=False),
        pa.field("feature", pa.list_(pa.field("element", pa.float32())), nullable=False),
    ]
)


@dataclass(frozen=True)
class Sample:
    row_id: str
    prompt: str
    completion: str

    @property
    def text_sha(self) -> str:
        return hashlib.sha256(f"{self.prompt}\0{self.completion}".encode()).hexdigest()[:24]


def config_key(config: FeatureConfig) -> str:
    payload = json.dumps(
        {
            "model": config.model_path,
            "last_blocks": config.last_blocks,
            "dim": config.dim,
            "seed": config.seed,
            "max_tokens": config.max_tokens,
            "chunk": config.chunk,  # the sign matrix depends on how it is blocked
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


FeatureFn = Callable[[list[tuple[str, str]]], tuple[np.ndarray, FeatureStats]]


@dataclass
class CachedFeatures:
    features: np.ndarray
    computed: int
    reused: int
    stats: FeatureStats | None


def cached_features(
    samples: list[Sample], cache_path: Path, key: str, compute: FeatureFn
) -> CachedFeatures:
    """Features for `samples`, computing only rows absent from the cache (then saving it)."""
    cached: dict[tuple[str, str], list[float]] = {}
    if output_exists(cache_path):
        for row in read_output(cache_path).to_pylist():
            if row["config_key"] == key:
                cached[(row["row_id"], row["text_sha"])] = row["feature"]
    missing = [s for s in samples if (s.row_id, s.text_sha) not in cached]
    stats = None
    if missing:
        computed, stats = compute([(s.prompt, s.completion) for s in missing])
        for sample, vector in zip(missing, computed, strict=True):
            cached[(sample.row_id, sample.text_sha)] = vector.tolist()
        keep = {(s.row_id, s.text_sha) for s in samples}
        table = pa.Table.from_pylist(
            [
                {"row_id": r, "text_sha": t, "config_key": key, "feature": f}
                for (r, t), f in cached.items()
                if (r, t) in keep
            ],
            schema=FEATURE_SCHEMA,
        )
        write_parquet_atomic(table, cache_path)
    features = np.array([cached[(s.row_id, s.text_sha)] for s in samples], dtype=np.float32)
    return CachedFeatures(features, len(missing), len(samples) - len(missing), stats)


_FEATURIZERS: dict[FeatureConfig, GradientFeaturizer] = {}


def feature_config(settings: MindSettings) -> FeatureConfig:
    model = settings.diversity.proxy_model
    if model == EMBEDDED_MODEL:
        model = str(prepare_embedded_model(settings.models_dir))
    return FeatureConfig(
        model_path=model,
        last_blocks=settings.diversity.last_blocks or None,
        dim=settings.diversity.dim,
        seed=settings.seed,
        max_tokens=settings.diversity.max_tokens,
        batch_size=settings.diversity.batch_size,
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

    cache = feature_cache_file(settings.data_dir, cache_name)
    return config, cached_features(samples, cache, config_key(config), compute)
