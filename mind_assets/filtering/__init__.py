"""Filtering: named heuristic rules split each conversations partition into accepted rows and a
quarantine (every rejection counted per rule, in DuckDB and the asset checks), and the longest
accepted conversation per chunk is kept as the MIND paper's strongest variant."""

from mind_assets.filtering.assets import (
    FILTER_CONFIG,
    filter_config,
    filtered_conversations,
    longest_conversations,
)
from mind_assets.filtering.outputs import FILTERED_CONVERSATIONS, LONGEST_CONVERSATIONS
from mind_assets.lib.stages import Stage
from mind_assets.settings import FilterThresholds

STAGE = Stage(
    name="filtering",
    description=__doc__,
    assets=(filter_config, filtered_conversations, longest_conversations),
    families=(FILTERED_CONVERSATIONS, LONGEST_CONVERSATIONS),
    version_sources=(FILTER_CONFIG,),
    settings=FilterThresholds,
)
