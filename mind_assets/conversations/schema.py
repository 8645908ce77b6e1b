"""Row schema of generated conversations. The lineage columns are part of the schema: a row
without them cannot be written."""

from __future__ import annotations

import pyarrow as pa

TURN_TYPE = pa.struct([pa.field("speaker", pa.string()), pa.field("text", pa.string())])

# Columns every generated row carries, whatever the generation family.
LINEAGE_FIELDS = [
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("chunk_id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("prompt_version", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("engine", pa.string(), nullable=False),
    pa.field("engine_version", pa.string(), nullable=False),
    pa.field("sampling_params", pa.string(), nullable=False),  # JSON
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("prompt_tokens", pa.int32(), nullable=False),
    pa.field("completion_tokens", pa.int32(), nullable=False),
    pa.field("finish_reason", pa.string(), nullable=False),
    pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("request_hash", pa.string(), nullable=False),
]
LINEAGE_COLUMNS = [f.name for f in LINEAGE_FIELDS]

CONVERSATION_SCHEMA = pa.schema(
    [
        pa.field("conversation_id", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("style", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),  # the raw model output
        # "element" is the item name parquet writes, so the schema survives a round trip.
        pa.field("turns", pa.list_(pa.field("element", TURN_TYPE)), nullable=False),
        pa.field("n_turns", pa.int32(), nullable=False),
        *LINEAGE_FIELDS,
    ]
)
