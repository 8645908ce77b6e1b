"""The indexed-dataset writer against megatron-core's own builder: the same documents give the
same `.bin` and `.idx` bytes, and megatron-core reads them back."""

from __future__ import annotations

import megatron.core.datasets.indexed_dataset as megatron
import numpy as np
import pytest

from mind_assets.lib.indexed_dataset import IndexedDatasetWriter


def documents(dtype: np.dtype, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    high = 60_000 if dtype == np.uint16 else 150_000
    # Empty documents too: a row whose text has no tokens is still a document (its eod).
    return [rng.integers(1, high, rng.integers(0, 40)).astype(dtype) for _ in range(count)]


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_the_bytes_are_megatron_cores(tmp_path, dtype):
    eod = 2
    docs = documents(np.dtype(dtype), 300, seed=7)

    builder = megatron.IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=dtype)
    for doc in docs:
        builder.add_document(np.concatenate((doc, [eod])).astype(dtype), [len(doc) + 1])
    builder.finalize(str(tmp_path / "theirs.idx"))

    writer = IndexedDatasetWriter(tmp_path / "ours.bin", np.dtype(dtype), eod)
    # In uneven batches, each a flat array of ids with the documents' bounds, some documents
    # skipped in a batch as rows of other sources are.
    for batch in np.array_split(np.arange(len(docs)), [1, 2, 50, 51, 200]):
        flat = np.concatenate([docs[i] for i in batch] + [np.empty(0, dtype)])
        bounds = np.concatenate(([0], np.cumsum([len(docs[i]) for i in batch])))
        written = writer.add_documents(flat, bounds[:-1], bounds[1:])
        assert written == sum(len(docs[i]) + 1 for i in batch)
    writer.finish(tmp_path / "ours.idx")

    for suffix in (".bin", ".idx"):
        ours = (tmp_path / f"ours{suffix}").read_bytes()
        assert ours == (tmp_path / f"theirs{suffix}").read_bytes(), suffix

    read = megatron.IndexedDataset(str(tmp_path / "ours"))
    assert len(read) == len(docs)
    for index in (0, 1, 149, 299):
        assert read[index].tolist() == [*docs[index].tolist(), eod]


def test_a_selection_of_rows_is_written_in_order(tmp_path):
    values = np.arange(1, 21, dtype=np.uint16)
    writer = IndexedDatasetWriter(tmp_path / "d.bin", np.dtype(np.uint16), 0)
    # Rows 1 and 3 of four rows of 5 ids each.
    assert writer.add_documents(values, np.array([5, 15]), np.array([10, 20])) == 12
    writer.finish(tmp_path / "d.idx")
    read = megatron.IndexedDataset(str(tmp_path / "d"))
    assert [read[i].tolist() for i in range(len(read))] == [
        [6, 7, 8, 9, 10, 0],
        [16, 17, 18, 19, 20, 0],
    ]


def test_an_empty_dataset_is_megatron_cores_empty_dataset(tmp_path):
    builder = megatron.IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=np.uint16)
    builder.finalize(str(tmp_path / "theirs.idx"))
    IndexedDatasetWriter(tmp_path / "ours.bin", np.dtype(np.uint16), 0).finish(
        tmp_path / "ours.idx"
    )
    for suffix in (".bin", ".idx"):
        ours = (tmp_path / f"ours{suffix}").read_bytes()
        assert ours == (tmp_path / f"theirs{suffix}").read_bytes()
