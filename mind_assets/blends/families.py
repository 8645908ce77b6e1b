"""Every output family the stages declare, by name: the one list a new family joins. Blends,
lineage and diversity iterate over it instead of naming families."""

from __future__ import annotations

from mind_assets.conversations.outputs import CONVERSATIONS
from mind_assets.corpus.outputs import CHUNKS, RAW_DOCUMENTS
from mind_assets.filtering.outputs import FILTERED_CONVERSATIONS, LONGEST_CONVERSATIONS
from mind_assets.lib.outputs import OutputFamily, family_graph
from mind_assets.math_traces.outputs import MATH_PROBLEMS, SOLUTION_TRACES
from mind_assets.task_qa.outputs import PRISMATIC_TASK_QA, TASK_QA, TASK_SEEDS

FAMILIES: dict[str, OutputFamily] = family_graph(
    (
        RAW_DOCUMENTS,
        CHUNKS,
        CONVERSATIONS,
        FILTERED_CONVERSATIONS,
        LONGEST_CONVERSATIONS,
        TASK_SEEDS,
        TASK_QA,
        PRISMATIC_TASK_QA,
        MATH_PROBLEMS,
        SOLUTION_TRACES,
    )
)
# What a blend spec may name as a source (`asset:`): the families their stages mark blendable.
BLEND_SOURCES: dict[str, OutputFamily] = {n: f for n, f in FAMILIES.items() if f.blendable}


def family(name: str) -> OutputFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"no output family {name!r}; declared: {sorted(FAMILIES)}") from None
