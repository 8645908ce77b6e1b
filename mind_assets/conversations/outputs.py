"""What the MIND stage writes, declared once: conversations per shard × style, each made from
one chunk."""

from __future__ import annotations

from mind_assets.conversations.schema import CONVERSATION_SCHEMA
from mind_assets.conversations.styles import STYLE_KEYS
from mind_assets.corpus.outputs import CHUNKS, SHARD
from mind_assets.lib.outputs import OutputFamily, ParentLink, PartitionDim

STYLE = PartitionDim("style", selection="styles", values=STYLE_KEYS)

CONVERSATIONS = OutputFamily(
    name="conversations",
    dims=(SHARD, STYLE),
    schema=CONVERSATION_SCHEMA,
    id_column="conversation_id",
    parents=(ParentLink(CHUNKS, "chunk_id"),),
    token_column="completion_tokens",
    label="conversation",
)
