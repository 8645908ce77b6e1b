"""Row schema of generated conversations. The lineage columns are part of the schema: a row
without them cannot be written."""

from __future__ import annotations

import pyarrow as pa

from mind_assets.llm.requests import GENERATION_FIELDS

TURN_TYPE = pa.struct([pa.field("speaker", pa.string()), pa.field("text", pa.string())])

# A conversation's lineage: the chunk and document it came from, the prompt, and how it was
# generated.
LINEAGE_FIELDS = [
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("chunk_id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("prompt_version", pa.string(), nullable=False),
    *GENERATION_FIELDS,
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
