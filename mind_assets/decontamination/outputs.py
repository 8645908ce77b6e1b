"""What the decontamination stage writes, declared once: the benchmark index, one table of every
text of every benchmark item, not partitioned."""

from __future__ import annotations

from mind_assets.decontamination.benchmarks import BENCHMARK_TEXT_SCHEMA
from mind_assets.lib.outputs import OutputFamily

BENCHMARK_INDEX = OutputFamily(
    name="benchmark_index",
    dims=(),
    schema=BENCHMARK_TEXT_SCHEMA,
    id_column="item_id",
    text_column="text",
    label="benchmark text",
)
