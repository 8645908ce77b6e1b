"""The regeneration schedules, one per generated family (`regeneration.py` says how a tick
works). A stage's own schedules, such as the nightly blend rebuild, are in its package."""

from mind_assets.conversations.assets import conversations
from mind_assets.filtering.assets import filtered_conversations
from mind_assets.math_traces.assets import solution_traces
from mind_assets.operations.regeneration import RegenerationChain, regeneration_schedule
from mind_assets.task_qa.assets import prismatic_task_qa, task_qa

PER_TICK = (
    "at most {budget} partitions per tick; each tick asks about at most {limit} partitions, "
    "going on where the last accepted tick stopped."
)

CHAINS = (
    RegenerationChain(
        "conversations",
        (conversations, filtered_conversations),
        budget=lambda s: s.conversations.regeneration_budget,
        scan_limit=lambda s: s.conversations.regeneration_scan_limit,
        description="Hourly: observe every version source (prompts, model, filter thresholds), "
        "then rematerialize the conversations partitions Dagster reports unsynced (regenerated "
        "and filtered again) and the unsynced filtered_conversations partitions (filtered "
        "again), "
        + PER_TICK.format(
            budget="MIND_CONVERSATIONS__REGENERATION_BUDGET",
            limit="MIND_CONVERSATIONS__REGENERATION_SCAN_LIMIT",
        ),
    ),
    RegenerationChain(
        "task_qa",
        (task_qa,),
        budget=lambda s: s.task_qa.regeneration_budget,
        scan_limit=lambda s: s.task_qa.regeneration_scan_limit,
        description="Hourly: observe every version source, then regenerate the task_qa families "
        "unsynced by a prompt edit, MIND_TASK_QA__* or the model, "
        + PER_TICK.format(
            budget="MIND_TASK_QA__REGENERATION_BUDGET",
            limit="MIND_TASK_QA__REGENERATION_SCAN_LIMIT",
        ),
    ),
    RegenerationChain(
        "prismatic_task_qa",
        (prismatic_task_qa,),
        budget=lambda s: s.task_qa.regeneration_budget,
        scan_limit=lambda s: s.task_qa.regeneration_scan_limit,
        description="Hourly: observe every version source, then run the Prismatic rounds again "
        "for the families whose prismatic_task_qa is unsynced (new task Q&A items, settings or "
        "model), "
        + PER_TICK.format(
            budget="MIND_TASK_QA__REGENERATION_BUDGET",
            limit="MIND_TASK_QA__REGENERATION_SCAN_LIMIT",
        ),
    ),
    RegenerationChain(
        "solution_traces",
        (solution_traces,),
        budget=lambda s: s.math.regeneration_budget,
        scan_limit=lambda s: s.math.regeneration_scan_limit,
        description="Hourly: observe every version source, then regenerate the solution_traces "
        "partitions (source x mode) unsynced by a prompt edit, MIND_MATH__* or the model, "
        + PER_TICK.format(
            budget="MIND_MATH__REGENERATION_BUDGET", limit="MIND_MATH__REGENERATION_SCAN_LIMIT"
        ),
    ),
)
REGENERATION_SCHEDULES = [regeneration_schedule(chain) for chain in CHAINS]
(
    regenerate_unsynced_conversations,
    regenerate_unsynced_task_qa,
    regenerate_unsynced_prismatic_task_qa,
    regenerate_unsynced_solution_traces,
) = REGENERATION_SCHEDULES
