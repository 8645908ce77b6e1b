"""What the corpus stage writes, declared once: raw documents and their chunks, per shard."""

from __future__ import annotations

from mind_assets.corpus.schema import (
    CHUNK_SCHEMA,
    RAW_DOCUMENT_QUARANTINE_SCHEMA,
    RAW_DOCUMENT_SCHEMA,
)
from mind_assets.lib.instance import SHARDS_PARTITION
from mind_assets.lib.outputs import OutputFamily, ParentLink, PartitionDim

SHARD = PartitionDim("shard", selection="shards", dynamic=SHARDS_PARTITION, shards_rows=True)

RAW_DOCUMENTS = OutputFamily(
    name="raw_documents",
    dims=(SHARD,),
    schema=RAW_DOCUMENT_SCHEMA,
    id_column="doc_id",
    quarantine_schema=RAW_DOCUMENT_QUARANTINE_SCHEMA,  # documents holding a benchmark item
    label="raw_document",
    blendable=True,
)

CHUNKS = OutputFamily(
    name="chunks",
    dims=(SHARD,),
    schema=CHUNK_SCHEMA,
    id_column="chunk_id",
    parents=(ParentLink(RAW_DOCUMENTS, "doc_id"),),
    token_column="n_tokens",
    label="chunk",
)
