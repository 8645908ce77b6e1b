"""Verified math solution traces (the Nemotron-Math recipe): decontaminated problems per source,
their difficulty and checked reference from sampled solutions, then k traces per problem in each
reasoning mode, with Python tool calls run in a kernel jail, each verified against the
reference."""

from mind_assets.lib.stages import Stage
from mind_assets.math_traces.assets import (
    MATH_CONFIG,
    MATH_PROMPTS,
    math_config,
    math_problems,
    math_prompts,
    problem_difficulty,
    solution_traces,
)
from mind_assets.math_traces.outputs import MATH_PROBLEMS, PROBLEM_DIFFICULTY, SOLUTION_TRACES
from mind_assets.settings import MathSettings

STAGE = Stage(
    name="math_traces",
    description=__doc__,
    assets=(math_prompts, math_config, math_problems, problem_difficulty, solution_traces),
    families=(MATH_PROBLEMS, PROBLEM_DIFFICULTY, SOLUTION_TRACES),
    version_sources=(MATH_PROMPTS, MATH_CONFIG),
    settings=MathSettings,
)
