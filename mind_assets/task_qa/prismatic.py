"""Prismatic selection: cluster the gradient space of the current pool and favour the regions the
pool under-represents.

- Clustering is spherical k-means (cosine) over the pool's gradient features, k = 10% of the pool.
- Filter mode keeps new samples whose nearest centroid is one of the smaller clusters (the
  smaller half by default).
- Generation mode picks one cluster at random among the smallest 10% and draws few-shot seeds from
  it, so that generation targets an under-represented region.
Every decision names the cluster and the reason, for the row that carries it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from mind_assets.llm.features import Sample, features_for
from mind_assets.settings import MindSettings


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


@dataclass
class Clustering:
    centroids: np.ndarray  # k × d, unit rows
    sizes: np.ndarray  # pool members per cluster
    labels: np.ndarray  # cluster of each pool member

    @property
    def k(self) -> int:
        return len(self.sizes)

    def assign(self, features: np.ndarray) -> np.ndarray:
        return np.argmax(_normalise(features) @ self.centroids.T, axis=1)

    def smallest(self, fraction: float) -> set[int]:
        """The `fraction` of clusters with the fewest pool members (at least one cluster)."""
        count = max(1, math.floor(self.k * fraction))
        order = np.lexsort((np.arange(self.k), self.sizes))  # by size, ties by id
        return {int(c) for c in order[:count]}


def spherical_kmeans(
    features: np.ndarray, k: int | None = None, *, seed: int = 0, iterations: int = 50
) -> Clustering:
    """Cosine k-means with k-means++ seeding; k defaults to 10% of the pool (at least 1)."""
    x = _normalise(np.asarray(features, dtype=np.float64))
    n = len(x)
    if n == 0:
        raise ValueError("cannot cluster an empty pool")
    k = min(n, k or max(1, round(0.1 * n)))
    rng = np.random.default_rng(seed)
    centroids = [x[rng.integers(n)]]
    for _ in range(1, k):
        distance = 1.0 - np.max(x @ np.array(centroids).T, axis=1)
        distance = np.clip(distance, 0, None)
        total = distance.sum()
        pick = rng.choice(n, p=distance / total) if total > 0 else rng.integers(n)
        centroids.append(x[pick])
    c = np.array(centroids)
    labels = np.full(n, -1)
    for _ in range(iterations):
        new_labels = np.argmax(x @ c.T, axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(k):
            members = x[labels == j]
            if len(members):
                c[j] = members.sum(axis=0)
        c = _normalise(c)
    sizes = np.bincount(labels, minlength=k)
    return Clustering(centroids=c, sizes=sizes, labels=labels)


@dataclass(frozen=True)
class Selection:
    cluster_id: int
    cluster_size: int
    kept: bool
    reason: str


def prismatic_filter(
    clustering: Clustering, features: np.ndarray, keep_fraction: float
) -> list[Selection]:
    """Keep the samples that land in the smaller `keep_fraction` of the pool's clusters."""
    favoured = clustering.smallest(keep_fraction)
    out = []
    for cluster in clustering.assign(features):
        size = int(clustering.sizes[cluster])
        kept = int(cluster) in favoured
        reason = (
            f"cluster {cluster} (size {size}) is among the smallest {keep_fraction:.0%} of "
            f"{clustering.k} clusters"
            if kept
            else f"cluster {cluster} (size {size}) is over-represented"
        )
        out.append(Selection(int(cluster), size, kept, reason))
    return out


def pick_generation_cluster(
    clustering: Clustering, rng: np.random.Generator, fraction: float
) -> tuple[int, str]:
    """A random cluster among the smallest `fraction`, and the reason to record."""
    candidates = sorted(clustering.smallest(fraction))
    cluster = int(rng.choice(candidates))
    return cluster, (
        f"seeds drawn from cluster {cluster} (size {int(clustering.sizes[cluster])}), one of the "
        f"{len(candidates)} smallest of {clustering.k} clusters"
    )


def cluster_shares(labels: np.ndarray, clusters: set[int]) -> float:
    """The share of `labels` that fall in `clusters`."""
    return float(np.isin(labels, list(clusters)).mean()) if len(labels) else 0.0


def cluster_seed_picker(clustering: Clustering, fraction: float):
    """Generation mode as a task-Q&A seed picker: for each item, one random cluster among the
    smallest `fraction`; its members are the few-shot seeds (topped up from the next smallest
    clusters when it has fewer than `shots`). Rows must be in pool order."""
    order = [int(c) for c in np.lexsort((np.arange(clustering.k), clustering.sizes))]

    def pick(seed: int, rows: list[dict], shots: int) -> tuple[list[dict], int, str]:
        if len(rows) != len(clustering.labels):
            raise ValueError(f"{len(rows)} seed rows but {len(clustering.labels)} clustered")
        rng = np.random.default_rng(seed)
        cluster, reason = pick_generation_cluster(clustering, rng, fraction)
        chosen = [i for i in np.flatnonzero(clustering.labels == cluster)]
        rng.shuffle(chosen)
        for other in order:  # top up from the next smallest clusters
            if len(chosen) >= shots:
                break
            if other != cluster:
                extra = list(np.flatnonzero(clustering.labels == other))
                rng.shuffle(extra)
                chosen += extra[: shots - len(chosen)]
                reason += f"; topped up from cluster {other}"
        return [rows[int(i)] for i in chosen[:shots]], cluster, reason

    return pick


def cluster_task_seeds(
    settings: MindSettings, family: str, seeds: list[dict], logger: logging.Logger
) -> Clustering:
    """The Prismatic pool of a task family: its seeds' gradient features (question as prompt,
    answer as completion), clustered by spherical k-means with k = the configured share."""
    pool = [Sample(f"seed:{s['seed_id']}", s["question"], str(s["answer"])) for s in seeds]
    _, cached = features_for(settings, pool, f"task_seeds__{family}", logger)
    k = max(1, round(settings.diversity.prismatic_cluster_fraction * len(pool)))
    logger.info("prismatic pool for %s: %d seeds in %d clusters", family, len(pool), k)
    return spherical_kmeans(cached.features, k, seed=settings.seed)
