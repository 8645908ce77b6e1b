"""Rolling hashes of word n-grams and MinHash near-duplicate detection, shared by the stages that
deduplicate generated text (conversation filters, task Q&A rules).

Words arrive as integer ids (dictionary-encoded once per batch); n-grams are rolling combinations
of those ids in numpy, so a document costs a handful of vectorised calls instead of a Python
loop per n-gram.
"""

from __future__ import annotations

import numpy as np

_MIX = np.uint64(0x9E3779B97F4A7C15)
_MERSENNE = np.uint64((1 << 61) - 1)


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
