"""Blend specs: YAML files under `blends/`, validated by pydantic before any work starts, and
their selections checked against the partitions each source family declares."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mind_assets.blends.families import BLEND_SOURCES
from mind_assets.lib.storage import validate_name

SOURCE_ASSETS = tuple(BLEND_SOURCES)
# Names a phase cannot take: beside the phase directories, `blend_exports/<blend>/` holds the
# Megatron export, which holds the tokenizer it used.
RESERVED_PHASE_NAMES = ("megatron", "tokenizer")


class BlendSpecError(ValueError):
    """A blend spec that cannot be used; the message names the file and the field."""


def check_parts(kind: str, names: list[str], shares: list[float]) -> None:
    """Parts of a whole (a phase's sources, a blend's phases): unique names, shares summing
    to 1; the error names `kind` ("phase 'p1': source", "phase")."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{kind} name(s) {repeated} used twice")
    total = sum(shares)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        what = "shares" if kind.endswith("source") else "fractions"
        raise ValueError(f"{kind} {what} sum to {total:g}, not 1")


class Selection(BaseModel):
    """Which partitions of a source family a blend reads: each field narrows the family's
    dimension whose `selection` it is (None: every key of it)."""

    model_config = ConfigDict(extra="forbid")

    shards: list[str] | None = None
    styles: list[str] | None = None
    families: list[str] | None = None
    math_sources: list[str] | None = None
    modes: list[str] | None = None
    accepted_only: bool = True  # never read a quarantine

    def narrowed(self) -> dict[str, list[str]]:
        """{selection field: keys} of the fields that are set."""
        fields = ("shards", "styles", "families", "math_sources", "modes")
        return {name: keys for name in fields if (keys := getattr(self, name)) is not None}


QualityTier = Literal["low", "medium", "high"]
TIER_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    asset: Literal[SOURCE_ASSETS]  # type: ignore[valid-type]
    selection: Selection = Selection()
    quality_tier: QualityTier
    share: float = Field(gt=0, le=1, description="Target share of the phase's tokens.")
    max_epochs: float = Field(gt=0, description="Most times the source's tokens may repeat.")

    @field_validator("name")
    @classmethod
    def _file_name(cls, name: str) -> str:
        # Exports name files after sources; a Megatron data-path list splits on whitespace.
        return validate_name(name, kind="source name")


class PhaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    fraction: float = Field(gt=0, le=1, description="Share of the blend's total token budget.")
    # The two-phase recipe's phase 2 takes only high-quality data: a phase may require a tier,
    # and a source below it fails the spec at load time.
    min_quality_tier: QualityTier | None = None
    sources: list[SourceSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _file_name(cls, name: str) -> str:
        if name in RESERVED_PHASE_NAMES:
            raise ValueError(f"phase name {name!r} is reserved: exports use {RESERVED_PHASE_NAMES}")
        return validate_name(name, kind="phase name")

    @model_validator(mode="after")
    def _sources_unique_shares_sum_to_one(self) -> PhaseSpec:
        where = f"phase {self.name!r}: source"
        check_parts(where, [s.name for s in self.sources], [s.share for s in self.sources])
        if self.min_quality_tier is not None:
            floor = TIER_RANK[self.min_quality_tier]
            below = [
                f"{s.name} ({s.quality_tier})"
                for s in self.sources
                if TIER_RANK[s.quality_tier] < floor
            ]
            if below:
                raise ValueError(
                    f"phase {self.name!r} takes only {self.min_quality_tier} quality and up; "
                    f"below it: {', '.join(below)}"
                )
        return self


class BlendSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    total_tokens: int = Field(gt=0)
    seed: int = 0
    # A source partition whose latest blocking asset check failed (or never ran on its current
    # version): left out of the manifest and named there (`exclude`), or the build refused
    # (`fail`).
    on_failed_check: Literal["exclude", "fail"] = "exclude"
    # The trainer's tokenizer, which counts the token budget and epoch caps and encodes the
    # Megatron export: a Hugging Face id, or a directory (absolute, or relative to the spec's
    # folder). None: the engine model's, the teacher that generated the data.
    tokenizer: str | None = Field(default=None, min_length=1)
    phases: list[PhaseSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _phases_unique_fractions_sum_to_one(self) -> BlendSpec:
        check_parts("phase", [p.name for p in self.phases], [p.fraction for p in self.phases])
        return self


def load_blend_spec(path: Path) -> BlendSpec:
    try:
        payload = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise BlendSpecError(f"blend spec not found: {path}") from error
    except yaml.YAMLError as error:
        raise BlendSpecError(f"{path}: YAML syntax error: {error}") from error
    if not isinstance(payload, dict):
        raise BlendSpecError(f"{path}: a blend spec is a mapping with name, total_tokens, phases")
    try:
        spec = BlendSpec(**payload)
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in error.errors()
        )
        raise BlendSpecError(f"{path}: {details}") from error
    if spec.name != path.stem:
        raise BlendSpecError(f"{path}: name {spec.name!r} must match the file name {path.stem!r}")
    check_selection(spec, path)
    return spec


def blend_names(blends_dir: Path) -> list[str]:
    return sorted(p.stem for p in blends_dir.glob("*.yaml")) if blends_dir.is_dir() else []


def blend_spec_path(blends_dir: Path, blend: str) -> Path:
    return blends_dir / f"{blend}.yaml"


def blend_spec_exists(blends_dir: Path, blend: str) -> bool:
    return blend_spec_path(blends_dir, blend).is_file()


def check_selection(
    spec: BlendSpec, path: Path, known: Mapping[str, Collection[str]] | None = None
) -> None:
    """Every selection field names a dimension of its source's family, and only keys that exist:
    always against keys fixed in code (styles, modes), and against the keys registered or
    configured now (`known`, by dimension name) when given."""
    for p, phase in enumerate(spec.phases):
        for s, source in enumerate(phase.sources):
            family = BLEND_SOURCES[source.asset]
            dims = {dim.selection: dim for dim in family.dims}
            where = f"{path}: phases.{p}.sources.{s} ({source.name}).selection"
            for field_name, keys in source.selection.narrowed().items():
                dim = dims.get(field_name)
                if dim is None:
                    raise BlendSpecError(
                        f"{where}.{field_name}: {source.asset} is not partitioned by it "
                        f"(its selections: {sorted(dims) or 'none'})"
                    )
                existing = dim.values or (known or {}).get(dim.name)
                if existing is None:
                    continue
                missing = sorted(set(keys) - set(existing))
                if missing:
                    raise BlendSpecError(
                        f"{where}.{field_name}: unknown {dim.name}(s) {missing}; "
                        f"known: {sorted(existing)}"
                    )
            if not source.selection.accepted_only and family.quarantine_schema is not None:
                raise BlendSpecError(
                    f"{where}.accepted_only: false would read {source.asset}'s quarantined rows"
                )
