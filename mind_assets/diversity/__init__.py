"""Diversity: G-Vendi (the Vendi score of a proxy model's projected gradients) of any target, a
partition of a generated family or a blend phase, beside distinct-n and embedding-Vendi
baselines, recorded per run in DuckDB."""

from mind_assets.diversity.assets import diversity
from mind_assets.lib.stages import Stage
from mind_assets.settings import DiversitySettings

STAGE = Stage(
    name="diversity",
    description=__doc__,
    assets=(diversity,),
    settings=DiversitySettings,
)
