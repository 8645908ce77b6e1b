"""Prismatic selection: cluster the gradient space of the current pool and favour the regions the
pool under-represents, over several rounds in which the pool grows.

- The pool is the family's seeds plus the items kept so far; seeds and generated items are
  featurised the same way (`pool_sample`: question and options as the prompt, worked reasoning
  and final answer as the completion).
- Clustering is spherical k-means (cosine) over the pool's gradient features, k = 10% of the pool.
- Filter mode keeps new samples whose nearest centroid is one of the smaller clusters (the
  smaller half by default).
- Generation mode picks one cluster at random among the smallest 10% and draws few-shot seeds from
  it, so that generation targets an under-represented region.
- Rounds (`run_prismatic_rounds`): round 1 filters the items task_qa generated; each later round
  generates from the grown pool's small clusters, then filters. Math items the filter keeps must
  also pass a majority-answer check. The G-Vendi of the pool and of the kept items is recorded
  after every round.
Every decision names the cluster and the reason, for the row that carries it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mind_assets.lib.vendi import vendi_score
from mind_assets.llm.features import Sample, features_for
from mind_assets.settings import MindSettings
from mind_assets.task_qa.majority import MajorityVerdict, MathItem


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


def pool_sample(row: dict) -> Sample:
    """The one featurisation of the Prismatic pool, for seed rows and generated items alike: the
    question (with its options, lettered) as the prompt; the worked reasoning (a seed's rationale,
    an item's reasoning) and the final answer as the completion."""
    if "qa_id" in row:
        row_id, reasoning = f"qa:{row['qa_id']}", row.get("reasoning")
    else:
        row_id, reasoning = f"seed:{row['seed_id']}", row.get("rationale")
    prompt = "\n".join(
        [
            f"Question: {row.get('question') or ''}",
            *(f"{chr(ord('A') + i)}) {c}" for i, c in enumerate(row.get("choices") or [])),
        ]
    )
    answer = f"Answer: {row.get('answer') or ''}"
    return Sample(row_id, prompt, f"{reasoning.strip()}\n{answer}" if reasoning else answer)


def prismatic_cache_name(family: str) -> str:
    """The feature cache of a family's pool and new items (diversity_features/<name>.parquet)."""
    return f"prismatic__{family}"


def cluster_k(pool_size: int, fraction: float) -> int:
    return max(1, round(fraction * pool_size))


def cluster_task_seeds(
    settings: MindSettings, family: str, seeds: list[dict], logger: logging.Logger
) -> Clustering:
    """The round-1 Prismatic pool of a task family: its seeds' gradient features
    (`pool_sample`), clustered by spherical k-means with k = the configured share."""
    pool = [pool_sample(s) for s in seeds]
    _, cached = features_for(settings, pool, prismatic_cache_name(family), logger)
    k = cluster_k(len(pool), settings.diversity.prismatic_cluster_fraction)
    logger.info("prismatic pool for %s: %d seeds in %d clusters", family, len(pool), k)
    return spherical_kmeans(cached.features, k, seed=settings.seed)


# --- rounds ---------------------------------------------------------------------------------------

# (round, pool rows in seed form, seed picker) -> (accepted task_qa rows, quarantined rows)
GenerateRound = Callable[[int, list[dict], Callable], tuple[list[dict], list[dict]]]
# (round, math items) -> verdict per item id
VerifyRound = Callable[[int, list[MathItem]], dict[str, MajorityVerdict]]
# samples -> one feature row each (cached, so a sample is computed once)
Featurise = Callable[[list[Sample]], np.ndarray]


@dataclass(frozen=True)
class RoundRecord:
    """What one round did; round 0 is the seeds alone (the baseline G-Vendi)."""

    round: int
    pool: int  # rows the round clustered (seeds + items kept before it)
    clusters: int
    new_items: int  # items the round considered (one point per item, whatever its forms)
    kept_by_filter: int
    verified: int  # items the majority check looked at
    kept: int
    pool_after: int
    g_vendi_pool: float  # the pool after the round
    g_vendi_kept: float  # every item kept so far (0 when none)
    g_vendi_new: float  # the round's new items, before selection (0 when none)


@dataclass
class PrismaticResult:
    kept: list[dict] = field(default_factory=list)  # task_qa rows + the Prismatic columns
    dropped: list[dict] = field(default_factory=list)  # the same, with `rejected_by`
    rounds: list[RoundRecord] = field(default_factory=list)


def as_seed_row(item: dict, source_split: str) -> dict:
    """A kept item in the seeds' form, so that later rounds can show it as a few-shot example
    (its `seed_id` is its qa_id)."""
    return {
        "task": item["task"],
        "family": item["family"],
        "seed_id": item["qa_id"],
        "context": None,
        "question": item["question"] or "",
        "choices": item["choices"] or None,
        "answer": item["answer"] or "",
        "rationale": item["reasoning"],
        "output_type": "multiple_choice" if item["form"] == "multiple_choice" else "generation",
        "source_split": source_split,
    }


def _by_item(rows: Sequence[dict], native_form: str) -> list[tuple[dict, list[dict]]]:
    """(representative row, all rows) per item id, in first-seen order; the representative is
    the item in the family's own form where that form was accepted."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["item_id"], []).append(row)
    return [
        (next((r for r in group if r["form"] == native_form), group[0]), group)
        for group in groups.values()
    ]


def _vendi(features: list[np.ndarray]) -> float:
    return round(vendi_score(np.stack(features)), 4) if features else 0.0


def _annotate(row: dict, round_: int, cluster: int | None, reason: str, verdict) -> dict:
    return {
        **row,
        "prismatic_round": round_,
        "prismatic_cluster": cluster,
        "prismatic_reason": reason,
        "majority_answer": verdict.majority_answer if verdict else None,
        "majority_votes": verdict.votes if verdict else None,
        "majority_samples": verdict.samples if verdict else None,
    }


class PoolFeatures:
    """The feature row of every sample seen so far. Each call hands `featurise` every sample
    seen so far, new ones appended (it caches, so each sample is computed once), and answers
    for the samples asked about."""

    def __init__(self, featurise: Featurise, seen: list[Sample]) -> None:
        self._featurise = featurise
        self._seen = list(seen)
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, samples: list[Sample]) -> list[np.ndarray]:
        self._seen.extend(s for s in samples if s.row_id not in self.vectors)
        computed = self._featurise(list({s.row_id: s for s in self._seen}.values()))
        ids = list({s.row_id: s for s in self._seen})
        self.vectors.update(zip(ids, computed, strict=True))
        return [self.vectors[s.row_id] for s in samples]

    def of(self, row_ids: list[str]) -> list[np.ndarray]:
        return [self.vectors[i] for i in row_ids]


@dataclass
class Pool:
    """The growing Prismatic pool: its rows in the seeds' form and their sample ids, in pool
    order, and the ids of the items kept so far."""

    rows: list[dict]
    ids: list[str]
    kept_ids: list[str] = field(default_factory=list)

    def add(self, item: dict, round_: int) -> None:
        row_id = pool_sample(item).row_id
        self.ids.append(row_id)
        self.kept_ids.append(row_id)
        self.rows.append(as_seed_row(item, f"prismatic_round_{round_}"))


def run_prismatic_rounds(
    *,
    seeds: list[dict],
    first_items: list[dict],
    rounds: int,
    native_form: str,
    featurise: Featurise,
    generate: GenerateRound,
    verify: VerifyRound | None,
    cluster_fraction: float,
    keep_fraction: float,
    generation_fraction: float,
    seed: int,
    logger: logging.Logger | None = None,
) -> PrismaticResult:
    """Round 1 filters `first_items` against the seeds' clusters; round r > 1 generates new items
    from the small clusters of the grown pool, then filters them. Items the filter keeps are
    checked by majority answer (when `verify` is given) and join the pool."""
    if not seeds:
        raise ValueError("the Prismatic pool needs at least one seed row")
    pool = Pool(rows=list(seeds), ids=[pool_sample(r).row_id for r in seeds])
    features = PoolFeatures(featurise, [pool_sample(r) for r in seeds])
    features([])
    out = PrismaticResult()
    seed_vendi = _vendi(features.of(pool.ids))
    out.rounds.append(RoundRecord(0, 0, 0, 0, 0, 0, 0, len(pool.ids), seed_vendi, 0.0, 0.0))
    for round_ in range(1, rounds + 1):
        k = cluster_k(len(pool.ids), cluster_fraction)
        clustering = spherical_kmeans(np.stack(features.of(pool.ids)), k, seed=seed)
        if round_ == 1:
            candidates, rejected_at_generation = list(first_items), []
        else:
            picker = cluster_seed_picker(clustering, generation_fraction)
            candidates, rejected_at_generation = generate(round_, list(pool.rows), picker)
        for row in rejected_at_generation:
            out.dropped.append(_annotate(row, round_, None, "rejected by the task rules", None))
        items = _by_item(candidates, native_form)
        new_vectors = features([pool_sample(rep) for rep, _ in items])
        decisions = (
            prismatic_filter(clustering, np.stack(new_vectors), keep_fraction) if items else []
        )
        passed = [(item, d) for item, d in zip(items, decisions, strict=True) if d.kept]
        verdicts: dict[str, MajorityVerdict] = {}
        if verify is not None and passed:
            verdicts = verify(
                round_,
                [
                    MathItem(rep["item_id"], rep["question"] or "", rep["answer"] or "")
                    for (rep, _), _ in passed
                ],
            )
        kept_now = _keep_or_drop(round_, items, decisions, verdicts, pool, out)
        record = RoundRecord(
            round=round_,
            pool=clustering.labels.size,
            clusters=clustering.k,
            new_items=len(items),
            kept_by_filter=len(passed),
            verified=len(verdicts),
            kept=kept_now,
            pool_after=len(pool.ids),
            g_vendi_pool=_vendi(features.of(pool.ids)),
            g_vendi_kept=_vendi(features.of(pool.kept_ids)),
            g_vendi_new=_vendi(new_vectors),
        )
        out.rounds.append(record)
        if logger:
            logger.info("prismatic round %d: %s", round_, record)
    return out


def _keep_or_drop(
    round_: int,
    items: list[tuple[dict, list[dict]]],
    decisions: list[Selection],
    verdicts: dict[str, MajorityVerdict],
    pool: Pool,
    out: PrismaticResult,
) -> int:
    """Annotate every row of the round's items with its cluster and the reasons: an item the
    filter kept and the majority check (if any) agreed with joins the pool and `out.kept`; the
    rest go to `out.dropped` with why. Returns how many items were kept."""
    kept_now = 0
    for (rep, rows), decision in zip(items, decisions, strict=True):
        verdict = verdicts.get(rep["item_id"])
        reason = decision.reason + (f"; {verdict.reason}" if verdict else "")
        keep = decision.kept and (verdict is None or verdict.agrees)
        why = (
            []
            if keep
            else ["prismatic_over_represented"]
            if not decision.kept
            else [verdict.reason.split(":")[0]]
        )
        for row in rows:
            annotated = _annotate(row, round_, decision.cluster_id, reason, verdict)
            if keep:
                out.kept.append(annotated)
            else:
                out.dropped.append({**annotated, "rejected_by": why})
        if keep:
            kept_now += 1
            pool.add(rep, round_)
    return kept_now
