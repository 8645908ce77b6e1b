"""What the filtering stage writes, declared once: accepted conversations (their quarantine
beside them) per shard × style, and the longest accepted conversation per chunk per shard."""

from __future__ import annotations

from dataclasses import replace

from mind_assets.conversations.outputs import CONVERSATIONS, STYLE
from mind_assets.corpus.outputs import SHARD
from mind_assets.filtering.schema import (
    FILTERED_SCHEMA,
    LONGEST_QUARANTINE_SCHEMA,
    QUARANTINE_SCHEMA,
)
from mind_assets.lib.outputs import OutputFamily, ParentLink

FILTERED_CONVERSATIONS = OutputFamily(
    name="filtered_conversations",
    dims=(SHARD, STYLE),
    schema=FILTERED_SCHEMA,  # its text has the preamble stripped
    id_column="conversation_id",
    quarantine_schema=QUARANTINE_SCHEMA,
    parents=(ParentLink(CONVERSATIONS, "conversation_id"),),
    token_column="completion_tokens",
    blendable=True,
)

# Rows are filtered rows as they are, per shard; each keeps its `style`, which names its parent
# partition. The quarantine holds candidates a newer benchmark index flags.
LONGEST_CONVERSATIONS = replace(
    FILTERED_CONVERSATIONS,
    name="longest_conversations",
    dims=(SHARD,),
    quarantine_schema=LONGEST_QUARANTINE_SCHEMA,
    parents=(ParentLink(FILTERED_CONVERSATIONS, "conversation_id"),),
)
