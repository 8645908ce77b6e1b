"""Gopher-style repetition statistics of one document, over its word ids (see
`lib/minhash.py` for the rolling n-gram hashes they share with deduplication)."""

from __future__ import annotations

import numpy as np

from mind_assets.lib.minhash import ngram_hashes


def _counted_ngrams(
    hashes: np.ndarray, n: int, total_chars: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A document's n-grams counted: (where each distinct n-gram first occurs, which distinct
    n-gram each one is, how often each distinct one occurs); all empty for a document without
    characters, which shares none."""
    grams = ngram_hashes(hashes, n) if total_chars else np.empty(0, np.uint64)
    _, first, inverse, counts = np.unique(
        grams, return_index=True, return_inverse=True, return_counts=True
    )
    return first, inverse, counts


def top_ngram_char_fraction(
    hashes: np.ndarray, lengths: np.ndarray, n: int, total_chars: int
) -> float:
    """Gopher: share of word characters covered by the most frequent n-gram's occurrences."""
    first, _, counts = _counted_ngrams(hashes, n, total_chars)
    if len(counts) == 0 or counts.max() < 2:
        return 0.0
    top = int(np.argmax(counts))
    start = int(first[top])
    return float(lengths[start : start + n].sum() * counts[top]) / total_chars


def duplicate_ngram_char_fraction(
    hashes: np.ndarray, lengths: np.ndarray, n: int, total_chars: int
) -> float:
    """Gopher: share of word characters inside n-grams that occur more than once."""
    _, inverse, counts = _counted_ngrams(hashes, n, total_chars)
    repeated = counts[inverse] > 1
    if not repeated.any():
        return 0.0
    covered = np.zeros(len(hashes), dtype=bool)
    for k in range(n):
        covered[k : k + len(inverse)] |= repeated
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
