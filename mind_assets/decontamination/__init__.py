"""Decontamination: the evaluation benchmarks' texts as a versioned n-gram index, and the one
rule every stage that makes or filters blendable rows applies with it (rows holding a benchmark
item are quarantined with the benchmark, the item and the matched span)."""

from mind_assets.decontamination.assets import (
    DECONTAMINATION_CONFIG,
    benchmark_index,
    decontamination_config,
)
from mind_assets.decontamination.outputs import BENCHMARK_INDEX
from mind_assets.lib.stages import Stage
from mind_assets.settings import DecontaminationSettings

STAGE = Stage(
    name="decontamination",
    description=__doc__,
    assets=(decontamination_config, benchmark_index),
    families=(BENCHMARK_INDEX,),
    version_sources=(DECONTAMINATION_CONFIG,),
    settings=DecontaminationSettings,
)
