"""What the task Q&A stage writes, declared once: a task family's normalised seed rows, the
items generated from them (each naming the seeds it was shown), and the items the Prismatic
filter keeps."""

from __future__ import annotations

from dataclasses import replace

from mind_assets.lib.outputs import OutputFamily, ParentLink, PartitionDim
from mind_assets.task_qa.schema import (
    PRISMATIC_TASK_QA_QUARANTINE_SCHEMA,
    PRISMATIC_TASK_QA_SCHEMA,
    SEED_SCHEMA,
    TASK_QA_QUARANTINE_SCHEMA,
    TASK_QA_SCHEMA,
)

# The dynamic partitions holding the selected task families (task_seed_catalog registers them).
TASK_FAMILIES_PARTITION = "task_families"
FAMILY = PartitionDim("family", selection="families", dynamic=TASK_FAMILIES_PARTITION)

TASK_SEEDS = OutputFamily(
    name="task_seeds",
    dims=(FAMILY,),
    schema=SEED_SCHEMA,
    id_column="seed_id",
    text_column="question",
    label="seeds",
)

TASK_QA = OutputFamily(
    name="task_qa",
    dims=(FAMILY,),
    schema=TASK_QA_SCHEMA,
    id_column="qa_id",
    quarantine_schema=TASK_QA_QUARANTINE_SCHEMA,
    parents=(ParentLink(TASK_SEEDS, "seed_ids", many=True),),
    token_column="completion_tokens",
    prompt_column="question",
    blendable=True,
)

# The task Q&A items the Prismatic rounds keep, each with its round, cluster and reason. A round-1
# row is its task_qa item (same qa_id) and traces through it; a row generated in a later round
# traces to the seeds among its `seed_ids` (the others are items kept in earlier rounds, rows of
# this family).
PRISMATIC_TASK_QA = replace(
    TASK_QA,
    name="prismatic_task_qa",
    schema=PRISMATIC_TASK_QA_SCHEMA,
    quarantine_schema=PRISMATIC_TASK_QA_QUARANTINE_SCHEMA,
    parents=(ParentLink(TASK_QA, "qa_id"), ParentLink(TASK_SEEDS, "seed_ids", many=True)),
)
