"""Row schemas of the filtering stage: accepted rows, quarantined rows and per-rule decisions."""

from __future__ import annotations

import pyarrow as pa

from mind_assets.conversations.schema import CONVERSATION_SCHEMA
from mind_assets.decontamination.check import CONTAMINATION_FIELD

# Accepted rows: the conversation with its preamble stripped (text) and everything else as
# generated, lineage included.
FILTERED_SCHEMA = CONVERSATION_SCHEMA.append(
    pa.field("preamble_stripped", pa.bool_(), nullable=False)
).append(pa.field("filter_profile", pa.string()))  # the rules that judged it (strict | paper)

# Rejected rows keep whatever they arrived with (even nulls), plus why they were rejected.
QUARANTINE_SCHEMA = pa.schema(
    [f.with_nullable(True) for f in CONVERSATION_SCHEMA]
    + [
        pa.field("rejected_by", pa.list_(pa.string()), nullable=False),
        pa.field("rule_values", pa.string(), nullable=False),  # JSON {rule: measured value}
        pa.field("filter_profile", pa.string()),
        CONTAMINATION_FIELD,  # the benchmark items a row holds (rule `contaminated`)
    ]
)
# The longest conversations' quarantine: filtered rows a newer benchmark index flags.
LONGEST_QUARANTINE_SCHEMA = pa.schema(
    [f.with_nullable(True) for f in FILTERED_SCHEMA]
    + [
        pa.field("rejected_by", pa.list_(pa.string()), nullable=False),
        CONTAMINATION_FIELD,
    ]
)

DECISION_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.string(), nullable=False),
        pa.field("style", pa.string(), nullable=False),
        pa.field("conversation_id", pa.string()),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("passed", pa.bool_(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)
