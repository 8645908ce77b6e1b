"""Gopher-style repetition statistics of one document, over its word ids (see
`lib/minhash.py` for the rolling n-gram hashes they share with deduplication)."""

from __future__ import annotations

import numpy as np

from mind_assets.lib.minhash import ngram_hashes


def top_ngram_char_fraction(
    hashes: np.ndarray, lengths: np.ndarray, n: int, total_chars: int
) -> float:
    """Gopher: share of word characters covered by the most frequent n-gram's occurrences."""
    grams = ngram_hashes(hashes, n)
    if len(grams) == 0 or total_chars == 0:
        return 0.0
    _, first, counts = np.unique(grams, return_index=True, return_counts=True)
    top = int(np.argmax(counts))
    if counts[top] < 2:
        return 0.0
    start = int(first[top])
    return float(lengths[start : start + n].sum() * counts[top]) / total_chars


def duplicate_ngram_char_fraction(
    hashes: np.ndarray, lengths: np.ndarray, n: int, total_chars: int
) -> float:
    """Gopher: share of word characters inside n-grams that occur more than once."""
    grams = ngram_hashes(hashes, n)
    if len(grams) == 0 or total_chars == 0:
        return 0.0
    _, inverse, counts = np.unique(grams, return_inverse=True, return_counts=True)
    repeated = counts[inverse] > 1
    if not repeated.any():
        return 0.0
    covered = np.zeros(len(hashes), dtype=bool)
    for k in range(n):
        covered[k : k + len(grams)] |= repeated
    return float(lengths[covered].sum()) / total_chars


def duplicate_ngram_fractions(
    hashes: np.ndarray, lengths: np.ndarray, limits: dict[int, float], total_chars: int
) -> dict[int, float]:
    """duplicate_ngram_char_fraction for each n in `limits`, computed only where it can matter.

    The share covered by repeated n-grams never grows with n (a repeated (n+1)-gram is made of
    repeated n-grams), so once a share is within every remaining limit, the longer n-grams are
    within theirs too and are reported with that share as their upper bound.
    """
    fractions: dict[int, float] = {}
    bound: float | None = None
    ns = sorted(limits)
    for index, n in enumerate(ns):
        if bound is not None and bound <= min(limits[m] for m in ns[index:]):
            fractions[n] = bound
            continue
        bound = fractions[n] = duplicate_ngram_char_fraction(hashes, lengths, n, total_chars)
    return fractions
