"""An external shuffle: rows scattered to numbered buckets on this machine's disk while their
sources are read in one order, then read back a bucket at a time, sorted by a column, in another.
That is how an export bigger than memory is written in its mixed order with each source file
read once (datatrove's tokenizer merger and Nemotron's data prep shuffle the same way)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Spill:
    """Buckets of rows of one `schema` under `directory` (a step's scratch directory), each an
    Arrow stream file written as rows arrive; `read` gives a bucket back sorted by
    `order_column` and deletes it. Memory holds one batch, never a bucket."""

    def __init__(self, directory: Path, schema: pa.Schema, order_column: str) -> None:
        self.directory = directory
        self.schema = schema
        self.order_column = order_column
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def _file(self, bucket: int) -> Path:
        return self.directory / f"bucket-{bucket:06d}.arrow"

    def add(self, buckets: np.ndarray, table: pa.Table) -> None:
        """Append each row of `table` to its bucket (`buckets[i]` for row i)."""
        if table.num_rows == 0:
            return
        order = np.argsort(buckets, kind="stable")
        ordered = buckets[order]
        table = table.take(pa.array(order))
        cuts = [0, *(np.flatnonzero(np.diff(ordered)) + 1).tolist(), len(ordered)]
        for start, end in itertools.pairwise(cuts):
            bucket = int(ordered[start])
            writer = self._writers.get(bucket)
            if writer is None:
                writer = pa.ipc.new_stream(str(self._file(bucket)), self.schema)
                self._writers[bucket] = writer
            writer.write_table(table.slice(start, end - start).cast(self.schema))

    def close(self) -> None:
        """Finish writing; every bucket is readable after this."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def read(self, bucket: int) -> pa.Table:
        """The rows of `bucket` sorted by the order column (none: an empty table); the bucket's
        file is deleted, so the scratch space is given back bucket by bucket."""
        if bucket in self._writers:
            self._writers.pop(bucket).close()
        path = self._file(bucket)
        if not path.is_file():
            return self.schema.empty_table()
        with pa.ipc.open_stream(str(path)) as reader:
            table = reader.read_all()
        path.unlink()
        return table.take(pc.sort_indices(table, [(self.order_column, "ascending")]))
