"""Row schemas of task Q&A: normalised seed rows, and generated items (one row per item and
form, lineage included)."""

from __future__ import annotations

import pyarrow as pa

from mind_assets.decontamination.check import CONTAMINATION_FIELD
from mind_assets.llm.requests import GENERATION_FIELDS

# A task's training rows, normalised; the answer is always the answer's text.
SEED_SCHEMA = pa.schema(
    [
        pa.field("task", pa.string(), nullable=False),
        pa.field("family", pa.string(), nullable=False),
        pa.field("seed_id", pa.string(), nullable=False),
        pa.field("context", pa.string()),
        pa.field("question", pa.string(), nullable=False),
        pa.field("choices", pa.list_(pa.field("element", pa.string()))),
        pa.field("answer", pa.string(), nullable=False),  # semantic text, never a letter/index
        pa.field("rationale", pa.string()),
        pa.field("output_type", pa.string(), nullable=False),  # multiple_choice | generation
        pa.field("source_split", pa.string(), nullable=False),
    ]
)

DISTRACTOR_TYPE = pa.struct([pa.field("choice", pa.string()), pa.field("why_wrong", pa.string())])

TASK_QA_SCHEMA = pa.schema(
    [
        pa.field("qa_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),  # shared by an item's two forms
        pa.field("task", pa.string(), nullable=False),
        pa.field("family", pa.string(), nullable=False),
        pa.field("form", pa.string(), nullable=False),  # multiple_choice | open_ended
        pa.field("question", pa.string()),
        pa.field("choices", pa.list_(pa.field("element", pa.string()))),
        pa.field("answer", pa.string()),  # semantic text, never a letter
        pa.field("reasoning", pa.string()),
        pa.field("distractor_explanations", pa.list_(pa.field("element", DISTRACTOR_TYPE))),
        pa.field("text", pa.string()),  # the training text rendered from the fields above
        # how the answer was checked: choice | math | exact_match (the task's metric) | free_text
        pa.field("answer_check", pa.string()),
        pa.field("conversion", pa.string()),  # how the open-ended stem was rewritten, else null
        pa.field("licence", pa.string()),  # the task dataset's licence (catalog `licence`)
        # lineage
        pa.field("seed_ids", pa.list_(pa.field("element", pa.string())), nullable=False),
        pa.field("seed_cluster", pa.int32()),  # Prismatic generation mode, else null
        pa.field("selection_reason", pa.string()),  # how the seeds were chosen
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
        pa.field("enrich_prompt_id", pa.string()),
        pa.field("enrich_prompt_version", pa.string()),
        *GENERATION_FIELDS,
        pa.field("raw_output", pa.string(), nullable=False),
    ]
)

TASK_QA_QUARANTINE_SCHEMA = TASK_QA_SCHEMA.append(
    pa.field("rejected_by", pa.list_(pa.field("element", pa.string())), nullable=False)
).append(CONTAMINATION_FIELD)  # the benchmark items a row holds (rule `contaminated`)


def prismatic_schema(base: pa.Schema) -> pa.Schema:
    """A task Q&A schema with the Prismatic record of each row: the round that considered it, its
    cluster, why it was kept or dropped, and the majority-answer check of a math item."""
    # `selection_reason` already says how the item's seeds were chosen; the filter's own
    # reason gets its own column.
    for column in (
        pa.field("prismatic_round", pa.int32()),
        pa.field("prismatic_cluster", pa.int32()),  # null: rejected before clustering
        pa.field("prismatic_reason", pa.string()),
        pa.field("majority_answer", pa.string()),  # null: not checked, or no majority
        pa.field("majority_votes", pa.int32()),
        pa.field("majority_samples", pa.int32()),
    ):
        base = base.append(column)
    return base


PRISMATIC_TASK_QA_SCHEMA = prismatic_schema(TASK_QA_SCHEMA)
PRISMATIC_TASK_QA_QUARANTINE_SCHEMA = prismatic_schema(TASK_QA_QUARANTINE_SCHEMA)
