"""The n-gram index of benchmark texts and the scan that finds them in rows.

Every benchmark text (a question, a solution, an option list) is put in normal form
(`normalise.py`) and indexed as word n-grams: `ngram` words (13 by default), or `short_ngram`
words (8) for texts shorter than that; texts shorter still are not indexed. A row that shares at
least `min_shared` distinct n-grams with one benchmark item is contaminated by it. An n-gram that
more than `BOILERPLATE_ITEMS` items share ("which of the following is the") is boilerplate and
dropped.

The scan is vectorised: a batch of rows is tokenised in Arrow, every word becomes its id in the
index's vocabulary (a word the benchmarks never use can be in no shared n-gram), every window of
known words is hashed with numpy, and the hashes are looked up in the sorted index. Only hits are
handled in Python, and each is verified word for word, so a hash collision never flags a row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mind_assets.decontamination.normalise import tokenise_batch

# An n-gram shared by more items than this is a benchmark's boilerplate, not any one item.
BOILERPLATE_ITEMS = 10
# Most words of a matched span a quarantine row records.
SPAN_WORDS = 40
CONTAMINATION, NEAR = 0, 1  # what an index entry is for
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class Match:
    """One benchmark item found in a row: the item, the longest run of words the row shares
    with it (normal form), how many distinct n-grams it shares, and whether it was found in the
    row's own text or in the source it was written from."""

    benchmark: str
    item_id: str
    span: str
    shared_ngrams: int
    ngram: int
    where: str = "text"

    def reason(self) -> str:
        """The quarantine's `rejected_by` entry: `contaminated: <benchmark> <item> ...`."""
        place = "" if self.where == "text" else f" ({self.where})"
        return f'contaminated: {self.benchmark} {self.item_id}{place}: "{self.span}"'


@dataclass
class RowScan:
    """What the scan found in one row: the items it is contaminated by (best first) and, when
    the index keeps near misses, the item it comes closest to without reaching the threshold."""

    matches: list[Match] = field(default_factory=list)
    near_miss: Match | None = None


@dataclass(frozen=True)
class IndexStats:
    texts: int  # benchmark texts given
    indexed: int  # long enough to index
    too_short: int  # shorter than short_ngram words
    ngrams: int  # distinct entries after boilerplate is dropped
    boilerplate: int  # n-grams dropped as boilerplate


def _window_hashes(ids: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """A 64-bit hash of each window of `length` ids from `starts` (the length seeds it, so
    windows of different lengths never share a hash by construction)."""
    h = np.full(starts.shape, length, dtype=np.uint64)
    for k in range(length):
        h = h * _MULTIPLIER + (ids[starts + k].astype(np.uint64) + np.uint64(1))
    return h


def _valid_starts(unknown_prefix: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Start positions whose window of `length` lies inside its text (`ends`: where the text of
    each position ends) and holds no word outside the vocabulary."""
    n = len(ends)
    starts = np.arange(n, dtype=np.int64)
    inside = starts + length <= ends
    starts = starts[inside]
    known = unknown_prefix[starts + length] - unknown_prefix[starts] == 0
    return starts[known]


class NgramIndex:
    """The index of a set of benchmark texts, each belonging to one item of one benchmark."""

    @classmethod
    def of_table(
        cls, table: pa.Table, *, ngram: int, short_ngram: int, near_misses: bool = False
    ) -> NgramIndex:
        """The index of a table of benchmark texts (`benchmark`, `item_id`, `text` columns,
        as `benchmark_index` writes them)."""
        return cls(
            table.column("benchmark").to_pylist(),
            table.column("item_id").to_pylist(),
            table.column("text").to_pylist(),
            ngram=ngram,
            short_ngram=short_ngram,
            near_misses=near_misses,
        )

    def __init__(
        self,
        benchmarks: Sequence[str],
        item_ids: Sequence[str],
        texts: Sequence[str],
        *,
        ngram: int = 13,
        short_ngram: int = 8,
        near_misses: bool = False,
    ) -> None:
        if not len(benchmarks) == len(item_ids) == len(texts):
            raise ValueError("benchmarks, item_ids and texts must be as long as each other")
        if short_ngram >= ngram:
            raise ValueError(f"short_ngram ({short_ngram}) must be below ngram ({ngram})")
        self.ngram, self.short_ngram = ngram, short_ngram
        items = list(dict.fromkeys(zip(benchmarks, item_ids, strict=True)))
        item_of = {item: i for i, item in enumerate(items)}
        self.items: list[tuple[str, str]] = items
        tokens = tokenise_batch(pa.array(list(texts), pa.string()))
        flat = tokens.flatten()
        offsets = tokens.offsets.to_numpy()
        lengths = np.diff(offsets)
        nonempty = pc.not_equal(flat, "")
        self.vocabulary = pc.unique(flat.filter(nonempty))
        ids = self._ids(flat)
        unknown_prefix = np.concatenate([[0], np.cumsum(ids < 0)])
        ends = np.repeat(offsets[1:], lengths)
        text_item = np.array([item_of[x] for x in zip(benchmarks, item_ids, strict=True)])
        text_of = np.repeat(np.arange(len(texts)), lengths)
        entries = []  # (hashes, starts, length, kind)
        for length, kind, wanted in (
            (ngram, CONTAMINATION, lengths >= ngram),
            (short_ngram, CONTAMINATION, (lengths >= short_ngram) & (lengths < ngram)),
            (short_ngram, NEAR, (lengths >= ngram) if near_misses else np.zeros_like(lengths)),
        ):
            starts = _valid_starts(unknown_prefix, ends, length)
            starts = starts[wanted[text_of[starts]]]
            entries.append((_window_hashes(ids, starts, length), starts, length, kind))
        hashes = np.concatenate([e[0] for e in entries])
        starts = np.concatenate([e[1] for e in entries])
        glen = np.concatenate([np.full(len(e[0]), e[2], np.int16) for e in entries])
        kind = np.concatenate([np.full(len(e[0]), e[3], np.int8) for e in entries])
        item = text_item[text_of[starts]] if len(starts) else np.zeros(0, np.int64)
        # One entry per (hash, item, kind); a hash more than BOILERPLATE_ITEMS items share goes.
        order = np.lexsort((kind, item, hashes))
        hashes, starts, glen, kind, item = (a[order] for a in (hashes, starts, glen, kind, item))
        first = np.ones(len(hashes), bool)
        first[1:] = (hashes[1:] != hashes[:-1]) | (item[1:] != item[:-1]) | (kind[1:] != kind[:-1])
        hashes, starts, glen, kind, item = (a[first] for a in (hashes, starts, glen, kind, item))
        _, per_hash = np.unique(hashes, return_counts=True)
        items_per_hash = np.repeat(per_hash, per_hash)
        keep = items_per_hash <= BOILERPLATE_ITEMS
        self.hashes, self.starts, self.glen = hashes[keep], starts[keep], glen[keep]
        self.kind, self.item = kind[keep], item[keep]
        self._flat_ids = ids
        self.stats = IndexStats(
            texts=len(texts),
            indexed=int(np.sum(lengths >= short_ngram)),
            too_short=int(np.sum(lengths < short_ngram)),
            ngrams=len(self.hashes),
            boilerplate=int(np.sum(per_hash > BOILERPLATE_ITEMS)),
        )
        self._lengths = sorted({int(g) for g in np.unique(self.glen)})

    def _ids(self, flat: pa.Array) -> np.ndarray:
        found = pc.index_in(flat, value_set=self.vocabulary)
        return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)

    def scan(self, texts: Sequence[str | None] | pa.Array, *, min_shared: int = 1) -> list[RowScan]:
        """What each text shares with the benchmark items (see `RowScan`)."""
        array = texts if isinstance(texts, pa.Array) else pa.array(list(texts), pa.string())
        results = [RowScan() for _ in range(len(array))]
        if not len(array) or not len(self.hashes):
            return results
        tokens = tokenise_batch(array)
        flat = tokens.flatten()
        offsets = tokens.offsets.to_numpy()
        lengths = np.diff(offsets)
        ids = self._ids(flat)
        unknown_prefix = np.concatenate([[0], np.cumsum(ids < 0)])
        ends = np.repeat(offsets[1:], lengths)
        row_of = np.repeat(np.arange(len(array)), lengths)
        # (row, item) -> kind -> {start: length}
        found: dict[tuple[int, int], dict[int, dict[int, int]]] = defaultdict(
            lambda: {CONTAMINATION: {}, NEAR: {}}
        )
        for length in self._lengths:
            starts = _valid_starts(unknown_prefix, ends, length)
            if not len(starts):
                continue
            hashes = _window_hashes(ids, starts, length)
            at = np.searchsorted(self.hashes, hashes)
            hit = at < len(self.hashes)
            hit[hit] = self.hashes[at[hit]] == hashes[hit]
            for start, h, lo in zip(starts[hit], hashes[hit], at[hit], strict=True):
                hi = lo
                while hi < len(self.hashes) and self.hashes[hi] == h:
                    hi += 1
                window = ids[start : start + length]
                for entry in range(lo, hi):
                    if self.glen[entry] != length:
                        continue
                    origin = self.starts[entry]
                    if not np.array_equal(self._flat_ids[origin : origin + length], window):
                        continue  # a hash collision, not a shared n-gram
                    row = int(row_of[start])
                    key = (row, int(self.item[entry]))
                    found[key][int(self.kind[entry])][int(start - offsets[row])] = length
        words = flat.to_pylist() if found else []
        for (row, item), kinds in found.items():
            benchmark, item_id = self.items[item]
            row_words = words[offsets[row] : offsets[row + 1]]
            strong, near = kinds[CONTAMINATION], kinds[NEAR]
            if len(strong) >= min_shared:
                match = _match(benchmark, item_id, row_words, strong)
                results[row].matches.append(match)
            elif strong or near:
                candidate = _match(benchmark, item_id, row_words, strong or near)
                best = results[row].near_miss
                if best is None or candidate.shared_ngrams > best.shared_ngrams:
                    results[row].near_miss = candidate
        for result in results:
            result.matches.sort(key=lambda m: (-m.shared_ngrams, m.benchmark, m.item_id))
            if result.matches:
                result.near_miss = None
        return results


def _match(benchmark: str, item_id: str, words: list[str], starts: dict[int, int]) -> Match:
    """The match of one item in one row: its longest run of overlapping shared n-grams."""
    best_from, best_to, run_from, run_to = 0, 0, None, 0
    for start in sorted(starts):
        end = start + starts[start]
        if run_from is None or start > run_to:
            run_from, run_to = start, end
        else:
            run_to = max(run_to, end)
        if run_to - run_from > best_to - best_from:
            best_from, best_to = run_from, run_to
    span = words[best_from:best_to]
    text = " ".join(span[:SPAN_WORDS]) + (" ..." if len(span) > SPAN_WORDS else "")
    return Match(benchmark, item_id, text, len(starts), max(starts.values()))
