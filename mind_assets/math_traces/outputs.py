"""What the math-trace stage writes, declared once: decontaminated problems per source, and the
verified solution traces of each (source, mode), incorrect ones in the quarantine beside them."""

from __future__ import annotations

from dataclasses import replace

from mind_assets.lib.outputs import OutputFamily, ParentLink, PartitionDim
from mind_assets.math_traces.difficulty import PROBLEM_DIFFICULTY_SCHEMA
from mind_assets.math_traces.problems import MATH_PROBLEM_SCHEMA
from mind_assets.math_traces.sources import MODES
from mind_assets.math_traces.traces import TRACE_QUARANTINE_SCHEMA, TRACE_SCHEMA

SOURCE = PartitionDim(
    "source",
    selection="math_sources",
    configured=lambda settings: [source.name for source in settings.math.sources],
)
MODE = PartitionDim("mode", selection="modes", values=MODES)

MATH_PROBLEMS = OutputFamily(
    name="math_problems",
    dims=(SOURCE,),
    schema=MATH_PROBLEM_SCHEMA,
    id_column="problem_id",
    text_column="question",
    label="problem",
)

# Per problem, from the difficulty modes' samples: the reference traces are checked against
# (repaired by majority vote, flagged) and whether it is too easy. Read by solution_traces.
PROBLEM_DIFFICULTY = replace(
    MATH_PROBLEMS,
    name="problem_difficulty",
    schema=PROBLEM_DIFFICULTY_SCHEMA,
    parents=(ParentLink(MATH_PROBLEMS, "problem_id"),),
    label="problem verdict",
)

SOLUTION_TRACES = OutputFamily(
    name="solution_traces",
    dims=(SOURCE, MODE),
    schema=TRACE_SCHEMA,  # its text is the problem and the solution
    id_column="trace_id",
    quarantine_schema=TRACE_QUARANTINE_SCHEMA,
    parents=(ParentLink(MATH_PROBLEMS, "problem_id"),),
    token_column="seq_tokens",
    prompt_column="question",
    completion_column="solution",
    blendable=True,
)
