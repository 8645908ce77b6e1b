"""Sequence-length buckets, one set (`MIND_LENGTH_BUCKETS`) for the traces that record them and
the exports that shard by them, after Nemotron-Math's bucketed long-context training: a row
belongs to the first bucket whose upper bound holds it, the last bucket is open-ended, and
training takes the buckets from short to long."""

from __future__ import annotations

from collections.abc import Sequence


def _tokens(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def bucket_index(tokens: int, bounds: Sequence[int]) -> int:
    """0 for the shortest bucket; len(bounds) for the open-ended one above the last bound."""
    for index, upper in enumerate(bounds):
        if tokens <= upper:
            return index
    return len(bounds)


def bucket_label(index: int, bounds: Sequence[int]) -> str:
    """`<=4k`, `<=512`, ..., `>128k`."""
    if index < len(bounds):
        return f"<={_tokens(bounds[index])}"
    return f">{_tokens(bounds[-1])}"


def length_bucket(tokens: int, bounds: Sequence[int]) -> str:
    return bucket_label(bucket_index(tokens, bounds), bounds)


def schedule(bounds: Sequence[int]) -> list[dict[str, int | str | None]]:
    """The buckets in training order, short to long: label and upper bound (None: open)."""
    return [
        {"bucket": bucket_label(i, bounds), "max_tokens": bounds[i] if i < len(bounds) else None}
        for i in range(len(bounds) + 1)
    ]
