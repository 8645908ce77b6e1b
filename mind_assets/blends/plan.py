"""Where every row of a blend's export comes from, decided from token counts alone.

A phase's plan lists, per position of its mixed (training) order, the source, file, row and
epoch it takes, and the row's tokens: every source sampled by its manifest tokens (whole passes
while the target allows, then a seeded random subset), then all shuffled together, seeded by the
manifest alone so every format, every part and every re-export agree. No text is read: the
counts come from the token cache, so a plan of a million rows takes seconds and a few arrays.

The plan also cuts the phase into parts, contiguous runs of positions that can be written
apart (in separate processes or pods) and give the same files as one process would; parquet
shards never straddle two parts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mind_assets.blends.manifest import Manifest, ResolvedFile, ResolvedPhase

# Tokens of every row of a pinned file, in row order (the token cache's counts).
RowCounts = Callable[[ResolvedFile], np.ndarray]


def sample_rows(
    tokens: np.ndarray, target: float, rng: random.Random
) -> tuple[np.ndarray, np.ndarray]:
    """(row, epoch) of a source's picks: whole passes over its rows while `target` tokens allow,
    then rows in a seeded random order until the target is met, so tokens land as close to the
    target as rows allow."""
    empty = np.zeros(0, dtype=np.int64)
    if len(tokens) == 0 or target <= 0:
        return empty, empty
    per_pass = int(tokens.sum())
    passes = int(target // per_pass) if per_pass else 0
    rows = np.tile(np.arange(len(tokens), dtype=np.int64), passes)
    epochs = np.repeat(np.arange(passes, dtype=np.int64), len(tokens))
    remaining = target - passes * per_pass
    order = list(range(len(tokens)))
    rng.shuffle(order)
    shuffled = np.asarray(order, dtype=np.int64)
    # A row is taken while tokens are still wanted before it: the running total before each
    # row in the shuffled order is compared with what was left after the whole passes.
    before = np.concatenate(([0], np.cumsum(tokens[shuffled])[:-1]))
    taken = shuffled[: int(np.count_nonzero(remaining - before > 0))]
    return (
        np.concatenate((rows, taken)),
        np.concatenate((epochs, np.full(len(taken), passes, dtype=np.int64))),
    )


@dataclass
class PhasePlan:
    """One phase's export, position by position (arrays of equal length, in training order)."""

    phase: ResolvedPhase
    source: np.ndarray  # index into phase.sources
    file: np.ndarray  # index into that source's files
    row: np.ndarray  # row within that file
    epoch: np.ndarray
    n_tokens: np.ndarray
    parts: list[tuple[int, int]]  # [start, end) positions of each part

    @property
    def rows(self) -> int:
        return len(self.source)

    def part_tokens(self, part: int) -> dict[int, int]:
        """Tokens (without end-of-document ids) and rows each source has in a part."""
        start, end = self.parts[part]
        sources, tokens = self.source[start:end], self.n_tokens[start:end]
        return {int(s): int(tokens[sources == s].sum()) for s in np.unique(sources).tolist()}


def part_ranges(rows: int, part_rows: int, shard_rows: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) position ranges of at most `part_rows` rows, rounded down to whole
    parquet shards (at least one); one empty part for an empty phase."""
    size = max(shard_rows, part_rows // shard_rows * shard_rows)
    return [(a, min(a + size, rows)) for a in range(0, rows, size)] or [(0, 0)]


def plan_phase(
    manifest: Manifest,
    phase: ResolvedPhase,
    counts: RowCounts,
    *,
    part_rows: int,
    shard_rows: int,
) -> PhasePlan:
    """The phase's rows in training order (see the module docstring), cut into parts."""
    rng = random.Random(f"{manifest.seed}:{manifest.blend}:{phase.name}")
    picked: list[tuple[np.ndarray, ...]] = []
    for index, source in enumerate(phase.sources):
        per_file = [counts(f) for f in source.files]
        tokens = np.concatenate(per_file) if per_file else np.zeros(0, dtype=np.int64)
        file_of = np.repeat(np.arange(len(per_file)), [len(c) for c in per_file])
        row_of = np.concatenate([np.arange(len(c)) for c in per_file]) if per_file else file_of
        rows, epochs = sample_rows(tokens, source.tokens, rng)
        picked.append(
            (np.full(len(rows), index), file_of[rows], row_of[rows], epochs, tokens[rows])
        )
    columns = [np.concatenate(c).astype(np.int64) for c in zip(*picked, strict=True)]
    order = list(range(len(columns[0]))) if picked else []
    rng.shuffle(order)
    permutation = np.asarray(order, dtype=np.int64)
    source, file, row, epoch, n_tokens = (
        [c[permutation] for c in columns] if picked else [np.zeros(0, np.int64)] * 5
    )
    return PhasePlan(
        phase, source, file, row, epoch, n_tokens, part_ranges(len(source), part_rows, shard_rows)
    )


def bucket_of(n_tokens: np.ndarray, bounds: Sequence[int]) -> np.ndarray:
    """`lib/buckets.bucket_index` of every row: the first bucket whose bound holds it."""
    return np.searchsorted(np.asarray(bounds, dtype=np.int64), n_tokens, side="left")


def bucket_shard_starts(plan: PhasePlan, bounds: Sequence[int], shard_rows: int) -> np.ndarray:
    """[part, bucket]: the number of the first shard of each bucket in each part. A bucketed
    shard never straddles two parts, so each part starts its buckets on fresh shards, numbered
    after those of the parts before it."""
    buckets = len(bounds) + 1
    starts = np.zeros((len(plan.parts), buckets), dtype=np.int64)
    running = np.zeros(buckets, dtype=np.int64)
    for index, (start, end) in enumerate(plan.parts):
        starts[index] = running
        per_bucket = np.bincount(bucket_of(plan.n_tokens[start:end], bounds), minlength=buckets)
        running += [math.ceil(n / shard_rows) for n in per_bucket]
    return starts
