"""Math-aware chunking: token-sized windows cut on paragraph or sentence boundaries.

A cut never falls inside `$...$`, `$$...$$`, `\\[...\\]`, `\\(...\\)` or a
`\\begin{env}...\\end{env}` block; a protected block larger than the target stays whole.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from itertools import pairwise

import pyarrow as pa

from mind_assets.corpus.schema import CHUNK_SCHEMA
from mind_assets.lib.latex import protected_spans
from mind_assets.lib.tokenizer import TokenCounter

# Break levels, from the most to the least preferred place to cut.
_BREAKS = [
    re.compile(r"\n[ \t]*\n"),  # paragraphs
    re.compile(r"(?<=[.!?:;])\s+"),  # sentences
    re.compile(r"\n"),  # lines
    re.compile(r"[ \t]+"),  # words, as a last resort
]


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int
    end: int
    text: str
    n_tokens: int


class _Protected:
    def __init__(self, spans: list[tuple[int, int]]) -> None:
        self.starts = [s for s, _ in spans]
        self.spans = spans

    def contains(self, position: int) -> bool:
        """True when a cut at `position` would fall strictly inside a protected span."""
        i = bisect.bisect_right(self.starts, position - 1) - 1
        return i >= 0 and self.spans[i][0] < position < self.spans[i][1]


def _cut_points(text: str, start: int, end: int, level: int, protected: _Protected) -> list[int]:
    points = []
    for match in _BREAKS[level].finditer(text, start, end):
        cut = match.end()
        if (
            start < cut < end
            and not protected.contains(match.start())
            and not protected.contains(cut)
        ):
            points.append(cut)
    return points


def _units(
    text: str,
    start: int,
    end: int,
    level: int,
    target: int,
    count: TokenCounter,
    protected: _Protected,
) -> list[tuple[int, int, int]]:
    """(start, end, tokens) pieces covering text[start:end], each at most `target` tokens
    unless it is a single protected block."""
    if level >= len(_BREAKS):
        return [(start, end, count([text[start:end]])[0])]
    bounds = [start, *_cut_points(text, start, end, level, protected), end]
    pieces = list(pairwise(bounds))
    sizes = count([text[a:b] for a, b in pieces])
    units: list[tuple[int, int, int]] = []
    for (a, b), size in zip(pieces, sizes, strict=True):
        if size > target:
            units.extend(_units(text, a, b, level + 1, target, count, protected))
        else:
            units.append((a, b, size))
    return units


def chunk_text(
    text: str, count: TokenCounter, *, target_tokens: int, overlap_tokens: int
) -> list[Chunk]:
    """Pack boundary-aligned units greedily into chunks of about `target_tokens` tokens
    (MIND_CORPUS__CHUNK_TOKENS), each starting with `overlap_tokens` of the one before."""
    if not text.strip():
        return []
    protected = _Protected(protected_spans(text))
    units = _units(text, 0, len(text), 0, target_tokens, count, protected)
    groups: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    size = 0
    for unit in units:
        if current and size + unit[2] > target_tokens:
            groups.append(current)
            current, size = _overlap_tail(current, overlap_tokens), 0
            size = sum(u[2] for u in current)
        current.append(unit)
        size += unit[2]
    if current:
        # A short tail is folded into the previous chunk when that stays near the target.
        tail_size = sum(u[2] for u in current)
        if groups and tail_size < target_tokens // 4:
            merged = sum(u[2] for u in groups[-1]) + tail_size
            if merged <= int(target_tokens * 1.25):
                groups[-1] = _merge(groups[-1], current)
                current = []
        if current:
            groups.append(current)
    texts = [text[g[0][0] : g[-1][1]].strip() for g in groups]
    counts = count(texts)
    return [
        Chunk(index=i, start=g[0][0], end=g[-1][1], text=t, n_tokens=n)
        for i, (g, t, n) in enumerate(zip(groups, texts, counts, strict=True))
        if t
    ]


def _overlap_tail(
    group: list[tuple[int, int, int]], overlap_tokens: int
) -> list[tuple[int, int, int]]:
    if overlap_tokens <= 0:
        return []
    tail: list[tuple[int, int, int]] = []
    size = 0
    for unit in reversed(group[1:]):  # never repeat the whole previous chunk
        if size + unit[2] > overlap_tokens:
            break
        tail.insert(0, unit)
        size += unit[2]
    return tail


def _merge(
    previous: list[tuple[int, int, int]], tail: list[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    last_end = previous[-1][1]
    return previous + [u for u in tail if u[0] >= last_end]


def chunk_rows(
    documents: pa.Table,
    count: TokenCounter,
    *,
    shard: str,
    tokenizer: str,
    target_tokens: int,
    overlap_tokens: int = 0,
) -> pa.Table:
    """A shard's documents as chunk rows (`CHUNK_SCHEMA`), each naming its document and the
    tokenizer that counted it."""
    rows = []
    for doc_id, text in zip(
        documents.column("doc_id").to_pylist(), documents.column("text").to_pylist(), strict=True
    ):
        for chunk in chunk_text(
            text, count, target_tokens=target_tokens, overlap_tokens=overlap_tokens
        ):
            rows.append(
                {
                    "chunk_id": f"{doc_id}#{chunk.index}",
                    "doc_id": doc_id,
                    "shard": shard,
                    "chunk_index": chunk.index,
                    "text": chunk.text,
                    "n_tokens": chunk.n_tokens,
                    "char_start": chunk.start,
                    "char_end": chunk.end,
                    "tokenizer": tokenizer,
                }
            )
    return pa.Table.from_pylist(rows, schema=CHUNK_SCHEMA)
