"""Diversity scores: the Vendi score (in `lib/vendi.py`, shared with the Prismatic rounds of task
Q&A) and the distinct-n-gram baseline."""

from __future__ import annotations

import re
from collections.abc import Sequence

from mind_assets.lib.vendi import vendi_score

__all__ = ["distinct_ngram_ratio", "vendi_score"]

_WORD = re.compile(r"\w+", re.UNICODE)


def distinct_ngram_ratio(texts: Sequence[str], n: int = 2) -> float:
    """Distinct word n-grams over all word n-grams across the texts (distinct-n)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = [w.lower() for w in _WORD.findall(text)]
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0
