"""Token counts and ids of blend sources under a blend's tokenizer, made once per file content.

The first manifest that needs a file under a tokenizer encodes it (in a pool of worker
processes) into the token cache: per row its token count and ids, beside a one-line summary.
Every later manifest reads the summary (a rebuild of an unchanged corpus reads no text), and
every export reads the ids instead of tokenizing again. The cache is keyed by the file's
sha256 and the tokenizer's fingerprint, so it never goes stale; `mind gc` deletes what no
version holds any more.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mind_assets.lib.progress import Log, Progress
from mind_assets.lib.storage import (
    OutputReadError,
    iter_output_batches,
    output_rows,
    parquet_writer,
    read_json,
    read_output,
    token_cache_file,
    write_json_atomic,
)
from mind_assets.lib.tokenizer import BlendTokenizer, EncodingPool, token_dtype

ENCODE_BATCH = 1024  # rows per batch sent to a worker
# Fewer rows than this are encoded here: starting worker processes would cost more.
POOL_MIN_ROWS = 8 * ENCODE_BATCH


def cache_schema(dtype: np.dtype) -> pa.Schema:
    return pa.schema(
        [
            pa.field("n_tokens", pa.int32(), nullable=False),
            pa.field("ids", pa.list_(pa.from_numpy_dtype(dtype)), nullable=False),
        ]
    )


@dataclass(frozen=True)
class CountedFile:
    """One file version a blend reads: where it is, its content and its text column."""

    path: Path
    sha256: str
    text_column: str


class TokenCache:
    """The token cache of one tokenizer under a data root."""

    def __init__(
        self, data_dir: Path, tokenizer: BlendTokenizer, *, workers: int, log: Log | None = None
    ) -> None:
        self.data_dir = data_dir
        self.tokenizer = tokenizer
        self.workers = workers
        self.log = log

    def file(self, counted: CountedFile) -> Path:
        return token_cache_file(
            self.data_dir, self.tokenizer.fingerprint, counted.path, counted.sha256
        )

    def summary(self, counted: CountedFile) -> dict | None:
        """{rows, tokens, ...} of a cached file; None when it is not cached (or cached by a
        tokenizer that only shares a fingerprint prefix)."""
        summary = read_json(self.file(counted).with_suffix(".json"))
        if summary is None or summary.get("fingerprint") != self.tokenizer.fingerprint:
            return None
        return summary

    def totals(self, files: Sequence[CountedFile]) -> dict[str, int]:
        """Tokens of each file, by sha256: read from the cache, encoding (once) the files it
        does not hold yet."""
        distinct = list({f.sha256: f for f in files}.values())
        summaries = {f.sha256: self.summary(f) for f in distinct}
        missing = [f for f in distinct if summaries[f.sha256] is None]
        if missing:
            self.fill(missing)
            summaries.update({f.sha256: self.summary(f) for f in missing})
        return {sha: int(s["tokens"]) for sha, s in summaries.items() if s is not None}

    def fill(self, files: Sequence[CountedFile]) -> None:
        """Encode `files` into the cache, a file at a time, batches spread over the workers."""
        total = sum(output_rows(f.path) for f in files)
        progress = Progress(f"tokenizing with {self.tokenizer.name}", self.log, total)
        dtype = token_dtype(self.tokenizer.vocab_size)
        workers = self.workers if total >= POOL_MIN_ROWS else 1
        with EncodingPool(self.tokenizer, workers) as pool:
            for counted in files:
                self._fill_one(counted, pool, dtype, progress)
        progress.finish()

    def _fill_one(
        self, counted: CountedFile, pool: EncodingPool, dtype: np.dtype, progress: Progress
    ) -> None:
        target = self.file(counted)
        rows = tokens = 0

        def texts() -> Iterator[list[str]]:
            for table in iter_output_batches(counted.path, [counted.text_column], ENCODE_BATCH):
                yield [t or "" for t in table[counted.text_column].to_pylist()]

        with parquet_writer(target, cache_schema(dtype)) as writer:
            for lengths, ids in pool.map(texts()):
                offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
                np.cumsum(lengths, out=offsets[1:])
                writer.write_table(
                    pa.table(
                        {
                            "n_tokens": pa.array(lengths, pa.int32()),
                            "ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)),
                        },
                        schema=cache_schema(dtype),
                    )
                )
                rows += len(lengths)
                tokens += int(lengths.sum())
                progress.advance(len(lengths), int(lengths.sum()))
        # The summary is written last: a cache file without one is not used.
        write_json_atomic(
            {
                "tokenizer": self.tokenizer.name,
                "fingerprint": self.tokenizer.fingerprint,
                "source_sha256": counted.sha256,
                "rows": rows,
                "tokens": tokens,
                "dtype": np.dtype(dtype).name,
            },
            target.with_suffix(".json"),
        )

    def counts(self, counted: CountedFile) -> np.ndarray:
        """Tokens of every row of a cached file, in row order."""
        table = read_output(self._cached(counted), columns=["n_tokens"])
        return table["n_tokens"].to_numpy().astype(np.int64)

    def batches(self, counted: CountedFile, batch_size: int) -> Iterator[pa.Table]:
        """The cached rows (n_tokens, ids) of a file, `batch_size` at a time, in row order."""
        return iter_output_batches(self._cached(counted), ["n_tokens", "ids"], batch_size)

    def _cached(self, counted: CountedFile) -> Path:
        if self.summary(counted) is None:
            self.fill([counted])
        path = self.file(counted)
        if self.summary(counted) is None:
            raise OutputReadError(f"{path}: token cache could not be written")
        return path
