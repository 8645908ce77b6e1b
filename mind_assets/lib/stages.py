"""The stage contract: what each stage package declares about itself, once, and how the platform
finds every stage.

A stage package (`mind_assets/<name>/`) exports one `STAGE = Stage(...)` from its `__init__.py`,
naming its assets, asset checks, output families, version sources, schedules, sensors and
settings sub-model. Nothing lists the stages by hand: `discover_stages` imports every package of
`mind_assets` and keeps those that export a `STAGE`, the way `dg` discovers a project's `defs/`.
The code location (`definitions.py`), the version sources the regeneration schedule observes and
the import test's layers all derive from what the stages export, and which stages a stage reads
is read off its assets' dependencies rather than declared. `docs/adding-a-stage.md` walks through
a new one.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetKey

from mind_assets.lib.outputs import OutputFamily
from mind_assets.lib.versions import VersionSource

PACKAGE = "mind_assets"


class StageError(ValueError):
    """A stage whose declaration contradicts itself; the message names the stage."""


@dataclass(frozen=True)
class Stage:
    """One stage of the platform, as its package declares it.

    `name` is the package's name and the Dagster group of every asset it defines (the UI's
    groups are the rooms of the house). `families` are the rows it writes (`lib/outputs.py`),
    each the output of one of its assets; `version_sources` are the observable source assets
    whose versions mark its partitions unsynced (prompt files, hashed settings); `settings` is
    its sub-model of `MindSettings` (declared in `settings.py`, the one configuration object)."""

    name: str
    description: str
    assets: tuple[Any, ...]  # AssetsDefinition / SourceAsset
    families: tuple[OutputFamily, ...] = ()
    version_sources: tuple[VersionSource, ...] = ()
    asset_checks: tuple[Any, ...] = ()
    schedules: tuple[Any, ...] = ()
    sensors: tuple[Any, ...] = ()
    settings: type | None = None
    asset_keys: frozenset[AssetKey] = field(init=False)

    def __post_init__(self) -> None:
        keys = frozenset(key for asset in self.assets for key in _keys(asset))
        object.__setattr__(self, "asset_keys", keys)
        for asset in self.assets:
            for key, group in _groups(asset).items():
                if group != self.name:
                    raise StageError(
                        f"stage {self.name!r}: asset {key.to_user_string()} is in group "
                        f"{group!r}; a stage's assets are grouped under its name"
                    )
        for family in self.families:
            if AssetKey(family.name) not in keys:
                raise StageError(
                    f"stage {self.name!r}: output family {family.name!r} is written by none of "
                    f"its assets ({sorted(k.to_user_string() for k in keys)})"
                )
        for source in self.version_sources:
            if source.asset_key not in keys:
                raise StageError(
                    f"stage {self.name!r}: version source {source.key!r} has no asset here "
                    "(add `version_source_asset(source)` to its assets)"
                )

    def dependency_keys(self) -> set[AssetKey]:
        """Every asset key this stage's assets depend on."""
        found: set[AssetKey] = set()
        for asset in self.assets:
            found |= set(getattr(asset, "dependency_keys", ()) or ())
        return found


def _keys(asset: Any) -> Iterable[AssetKey]:
    keys = getattr(asset, "keys", None)
    return keys if keys is not None else [asset.key]


def _groups(asset: Any) -> dict[AssetKey, str]:
    groups = getattr(asset, "group_names_by_key", None)
    if groups is not None:
        return dict(groups)
    return {asset.key: asset.group_name}


@functools.cache
def discover_stages(package: str = PACKAGE) -> tuple[Stage, ...]:
    """Every stage under `package`, upstream stages first (by the reads of their assets), each
    once; two stages of one name are an error."""
    root = importlib.import_module(package)
    found: dict[str, Stage] = {}
    for module in pkgutil.iter_modules(root.__path__):
        if not module.ispkg:
            continue
        stage = getattr(importlib.import_module(f"{package}.{module.name}"), "STAGE", None)
        if not isinstance(stage, Stage):
            continue
        if stage.name != module.name:
            raise StageError(
                f"package {package}.{module.name} exports a stage named {stage.name!r}; a stage "
                "is named after its package"
            )
        found[stage.name] = stage
    reads = stage_reads(found.values())
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in path:
            raise StageError(f"stages read each other in a circle: {' -> '.join((*path, name))}")
        for upstream in sorted(reads[name]):
            visit(upstream, (*path, name))
        ordered.append(name)

    for name in sorted(found):
        visit(name, ())
    return tuple(found[name] for name in ordered)


def stages_named(*names: str) -> tuple[Stage, ...]:
    """The stages exported by the packages `mind_assets.<name>`, in the order named: how a stage
    that reads other stages' families lists them (`blends` lists the stages it may blend)."""
    found = []
    for name in names:
        stage = getattr(importlib.import_module(f"{PACKAGE}.{name}"), "STAGE", None)
        if not isinstance(stage, Stage):
            raise StageError(f"package {PACKAGE}.{name} exports no STAGE")
        found.append(stage)
    return tuple(found)


def stage_reads(stages: Iterable[Stage]) -> dict[str, set[str]]:
    """Which stages each stage reads, from its assets' dependencies (a dependency on an asset no
    stage owns, such as the engine's version source, is no stage's)."""
    stages = list(stages)
    owner = {key: stage.name for stage in stages for key in stage.asset_keys}
    reads: dict[str, set[str]] = {}
    for stage in stages:
        owners = {owner.get(key, stage.name) for key in stage.dependency_keys()}
        reads[stage.name] = owners - {stage.name}
    return reads


def stage_depths(stages: Sequence[Stage]) -> dict[str, int]:
    """Hops from each stage to the farthest stage it reads nothing from (0: reads no stage)."""
    reads = stage_reads(stages)
    depths: dict[str, int] = {}

    def depth(name: str) -> int:
        if name not in depths:
            depths[name] = 1 + max((depth(r) for r in reads[name]), default=-1)
        return depths[name]

    for stage in stages:
        depth(stage.name)
    return depths


def families_of(stages: Iterable[Stage]) -> list[OutputFamily]:
    return [family for stage in stages for family in stage.families]
