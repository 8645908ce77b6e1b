"""megatron-core's indexed dataset (`.bin` + `.idx`, the `MMIDIDX` index, version 1), written
here, whole batches of documents at a time, so an export needs neither megatron-core nor the
torch it imports (about 400 MB of a process that only appends integers to a file). The bytes
are the ones megatron-core's `IndexedDatasetBuilder` writes for the same documents, one
sequence per document; a test holds the two side by side, and the exports' tests read every
dataset back with megatron-core itself.

The index: the magic `MMIDIDX\\0\\0`; version 1 (u64); the token dtype's code (u8); the number
of sequences (u64) and of document boundaries (u64, one more than the documents); then each
sequence's length (i32), its byte offset in the `.bin` (i64), and the boundaries (i64)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
# megatron-core's DType codes, by numpy dtype name.
DTYPE_CODES = {
    "uint8": 1,
    "int8": 2,
    "int16": 3,
    "int32": 4,
    "int64": 5,
    "float64": 6,
    "float32": 7,
    "uint16": 8,
}


class IndexedDatasetWriter:
    """Appends documents to `<prefix>.bin` as they come; `finish` writes `<prefix>.idx`. Every
    document is one sequence: its ids, then `eod`."""

    def __init__(self, bin_path: Path, dtype: np.dtype, eod: int) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in DTYPE_CODES:
            raise ValueError(f"no indexed-dataset code for dtype {self.dtype.name}")
        self.eod = eod
        self._data = open(bin_path, "wb")  # noqa: SIM115 - closed by finish()
        self._lengths: list[np.ndarray] = []

    def add_documents(self, values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> int:
        """Documents `values[starts[i]:ends[i]]`, each followed by the eod id; the tokens
        written, eod ids included."""
        lengths = (ends - starts).astype(np.int64)
        if len(lengths) == 0:
            return 0
        documents = np.concatenate(
            [values[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
        ).astype(self.dtype, copy=False)
        np.insert(documents, np.cumsum(lengths), self.eod).tofile(self._data)
        self._lengths.append((lengths + 1).astype(np.int32))
        return int(lengths.sum()) + len(lengths)

    def finish(self, idx_path: Path) -> None:
        self._data.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.empty(0, np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        boundaries = np.arange(len(lengths) + 1, dtype=np.int64)
        with open(idx_path, "wb") as index:
            index.write(INDEX_MAGIC)
            index.write(struct.pack("<Q", INDEX_VERSION))
            index.write(struct.pack("<B", DTYPE_CODES[self.dtype.name]))
            index.write(struct.pack("<Q", len(lengths)))
            index.write(struct.pack("<Q", len(boundaries)))
            index.write(lengths.tobytes())
            index.write(pointers.tobytes())
            index.write(boundaries.tobytes())
