"""Fast per-document text statistics: word n-gram repetition and MinHash signatures.

Words arrive as integer ids (dictionary-encoded once per batch); n-grams are rolling combinations
of those ids in numpy, so a document costs a handful of vectorised calls instead of a Python
loop per n-gram.
"""

from __future__ import annotations

import re

import numpy as np

_WORD = re.compile(r"\S+")
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MERSENNE = np.uint64((1 << 61) - 1)


def split_words(text: str) -> list[str]:
    return _WORD.findall(text)


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every word n-gram (len(hashes) - n + 1 of them)."""
    count = len(hashes) - n + 1
    if count <= 0:
        return np.empty(0, np.uint64)
    with np.errstate(over="ignore"):
        combined = hashes[:count].copy()
        for k in range(1, n):
            combined = combined * _MIX + hashes[k : k + count]
    return combined


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


class MinHasher:
    """MinHash over word shingles with fixed, seeded permutations."""

    def __init__(self, permutations: int, shingle_words: int, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, int(_MERSENNE), size=permutations, dtype=np.uint64)
        self.b = rng.integers(0, int(_MERSENNE), size=permutations, dtype=np.uint64)
        self.shingle_words = shingle_words
        self.permutations = permutations

    def signature(self, word_ids: np.ndarray) -> np.ndarray:
        """Signature of a document from its word ids (lower-cased words, one batch vocabulary)."""
        shingles = ngram_hashes(word_ids, min(self.shingle_words, max(len(word_ids), 1)))
        if len(shingles) == 0:
            return np.full(self.permutations, np.iinfo(np.uint64).max, dtype=np.uint64)
        shingles = np.unique(shingles) & _MERSENNE
        with np.errstate(over="ignore"):
            hashed = (np.outer(shingles, self.a) + self.b) & _MERSENNE
        return hashed.min(axis=0)


def near_duplicate_groups(
    signatures: list[np.ndarray], bands: int, threshold: float
) -> list[int | None]:
    """For each document, the index of an earlier near-duplicate (estimated Jaccard >= threshold),
    found by LSH banding; None for documents with no earlier near-duplicate."""
    if not signatures:
        return []
    rows = len(signatures[0]) // bands
    buckets: dict[tuple[int, bytes], list[int]] = {}
    duplicate_of: list[int | None] = [None] * len(signatures)
    for i, signature in enumerate(signatures):
        candidates: set[int] = set()
        for band in range(bands):
            key = (band, signature[band * rows : (band + 1) * rows].tobytes())
            bucket = buckets.setdefault(key, [])
            candidates.update(bucket)
            bucket.append(i)
        for j in sorted(candidates):
            if duplicate_of[j] is None and float(np.mean(signatures[j] == signature)) >= threshold:
                duplicate_of[i] = j
                break
    return duplicate_of
