"""Row schemas of the corpus stage: normalized raw documents and their token-sized chunks."""

from __future__ import annotations

import pyarrow as pa

from mind_assets.decontamination.check import CONTAMINATION_FIELD

RAW_DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        # Where the row came from: "<file>#<row>" or "hf:<dataset>[/<config>]:<split>#<row>".
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("title", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("n_chars", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
    ]
)

# Documents that hold a benchmark item: out of the blendable rows, still chunked (a long page's
# other chunks are conversations like any other; the chunk that holds the item is caught again
# where its conversations are filtered).
RAW_DOCUMENT_QUARANTINE_SCHEMA = RAW_DOCUMENT_SCHEMA.append(
    pa.field("rejected_by", pa.list_(pa.string()), nullable=False)
).append(CONTAMINATION_FIELD)

CHUNK_SCHEMA = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("char_start", pa.int64(), nullable=False),
        pa.field("char_end", pa.int64(), nullable=False),
        pa.field("tokenizer", pa.string(), nullable=False),
    ]
)
