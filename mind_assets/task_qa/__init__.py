"""Task-seeded Q&A: lm-evaluation-harness tasks whose training splits may seed generation, their
normalised seeds, new items in multiple-choice and open-ended form with reasoning and distractor
notes (filtered and decontaminated), and the items Prismatic rounds keep."""

from mind_assets.lib.stages import Stage
from mind_assets.settings import TaskQASettings
from mind_assets.task_qa.assets import (
    TASK_QA_CONFIG,
    TASK_QA_PROMPTS,
    prismatic_task_qa,
    task_qa,
    task_qa_config,
    task_qa_prompts,
    task_seed_catalog,
    task_seeds,
)
from mind_assets.task_qa.outputs import PRISMATIC_TASK_QA, TASK_QA, TASK_SEEDS

STAGE = Stage(
    name="task_qa",
    description=__doc__,
    assets=(
        task_qa_prompts,
        task_qa_config,
        task_seed_catalog,
        task_seeds,
        task_qa,
        prismatic_task_qa,
    ),
    families=(TASK_SEEDS, TASK_QA, PRISMATIC_TASK_QA),
    version_sources=(TASK_QA_PROMPTS, TASK_QA_CONFIG),
    settings=TaskQASettings,
)
