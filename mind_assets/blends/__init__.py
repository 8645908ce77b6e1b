"""Blends: a blend spec (`blends/<name>.yaml`: phases, tiers, shares, epoch caps) resolved into a
manifest that pins every file, token count and upstream partition, and exported as shuffled
parquet shards and Megatron indexed datasets whose every row traces to its source."""

from mind_assets.blends.assets import blend_export, blend_manifest
from mind_assets.blends.schedules import nightly_blend_rebuild
from mind_assets.lib.stages import Stage
from mind_assets.settings import BlendSettings

STAGE = Stage(
    name="blends",
    description=__doc__,
    assets=(blend_manifest, blend_export),
    schedules=(nightly_blend_rebuild,),
    settings=BlendSettings,
)
