"""The output families a blend can read, derived from the stages that write them: a stage whose
rows may be blended joins `BLENDED_STAGES` (the one line a new blendable stage changes outside its
own package). Blends, lineage, diversity and publishing iterate over these declarations instead
of naming families."""

from __future__ import annotations

from mind_assets.lib.outputs import OutputFamily, family_graph
from mind_assets.lib.stages import families_of, stages_named

BLENDED_STAGES = stages_named(
    "corpus",
    "conversations",
    "filtering",
    "task_qa",
    "math_traces",
)

# What a blend spec may name as a source (`asset:`): the families their stages mark blendable.
BLEND_SOURCES: dict[str, OutputFamily] = {
    f.name: f for f in families_of(BLENDED_STAGES) if f.blendable
}
# Those and every family they derive from: what lineage walks, by name.
FAMILIES: dict[str, OutputFamily] = family_graph(list(BLEND_SOURCES.values()))


def family(name: str) -> OutputFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"no output family {name!r}; declared: {sorted(FAMILIES)}") from None
