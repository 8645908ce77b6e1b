"""The regeneration schedules, one per generated family (`regeneration.py` says how a tick
works). A stage's own schedules, such as the nightly blend rebuild, are in its package."""

from dagster import AssetsDefinition

from mind_assets.conversations.assets import conversations
from mind_assets.filtering.assets import filtered_conversations
from mind_assets.math_traces.assets import solution_traces
from mind_assets.operations.regeneration import RegenerationChain, regeneration_schedule
from mind_assets.task_qa.assets import prismatic_task_qa, task_qa


def hourly_chain(assets: tuple[AssetsDefinition, ...], group: str, does: str) -> RegenerationChain:
    """The chain named after its first asset, paced by the regeneration budget and scan limit of
    the settings group `group` (MIND_<GROUP>__REGENERATION_*); `does` says what a tick does."""
    env = f"MIND_{group.upper()}__REGENERATION"
    return RegenerationChain(
        assets[0].key.to_user_string(),
        assets,
        budget=lambda s: getattr(s, group).regeneration_budget,
        scan_limit=lambda s: getattr(s, group).regeneration_scan_limit,
        description=f"{does}, at most {env}_BUDGET partitions per tick; each tick asks about at "
        f"most {env}_SCAN_LIMIT partitions, going on where the last accepted tick stopped.",
    )


CHAINS = (
    hourly_chain(
        (conversations, filtered_conversations),
        "conversations",
        "Hourly: observe every version source (prompts, model, filter thresholds), then "
        "rematerialize the conversations partitions Dagster reports unsynced (regenerated and "
        "filtered again) and the unsynced filtered_conversations partitions (filtered again)",
    ),
    hourly_chain(
        (task_qa,),
        "task_qa",
        "Hourly: observe every version source, then regenerate the task_qa families unsynced by "
        "a prompt edit, MIND_TASK_QA__* or the model",
    ),
    hourly_chain(
        (prismatic_task_qa,),
        "task_qa",
        "Hourly: observe every version source, then run the Prismatic rounds again for the "
        "families whose prismatic_task_qa is unsynced (new task Q&A items, settings or model)",
    ),
    hourly_chain(
        (solution_traces,),
        "math",
        "Hourly: observe every version source, then regenerate the solution_traces partitions "
        "(source x mode) unsynced by a prompt edit, MIND_MATH__* or the model",
    ),
)
REGENERATION_SCHEDULES = [regeneration_schedule(chain) for chain in CHAINS]
(
    regenerate_unsynced_conversations,
    regenerate_unsynced_task_qa,
    regenerate_unsynced_prismatic_task_qa,
    regenerate_unsynced_solution_traces,
) = REGENERATION_SCHEDULES
