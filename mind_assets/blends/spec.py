"""Blend specs: YAML files under `blends/`, validated by pydantic before any work starts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mind_assets.conversations.styles import STYLE_KEYS
from mind_assets.lib.storage import validate_name
from mind_assets.math_traces.sources import MODES

SOURCE_ASSETS = (
    "raw_documents",
    "filtered_conversations",
    "longest_conversations",
    "task_qa",
    "solution_traces",
)
# Names a phase cannot take: beside the phase directories, `blend_exports/<blend>/` holds the
# Megatron export, which holds the tokenizer it used.
RESERVED_PHASE_NAMES = ("megatron", "tokenizer")
# The text column a blend trains on, and the id that names a row, per source asset.
SOURCE_COLUMNS = {
    "raw_documents": ("text", "doc_id"),
    "filtered_conversations": ("text", "conversation_id"),
    "longest_conversations": ("text", "conversation_id"),
    "task_qa": ("text", "qa_id"),
    "solution_traces": ("text", "trace_id"),  # verified-correct traces only
}


class BlendSpecError(ValueError):
    """A blend spec that cannot be used; the message names the file and the field."""


class Selection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shards: list[str] | None = None  # None: every registered shard
    styles: list[str] | None = None  # conversations only; None: all seven
    families: list[str] | None = None  # task_qa only
    math_sources: list[str] | None = None  # solution_traces only; None: every configured source
    modes: list[str] | None = None  # solution_traces only; None: all six
    accepted_only: bool = True  # filtered assets: never read the quarantine

    @field_validator("styles")
    @classmethod
    def _known_styles(cls, styles: list[str] | None) -> list[str] | None:
        unknown = sorted(set(styles or ()) - set(STYLE_KEYS))
        if unknown:
            raise ValueError(f"unknown style(s) {unknown}; known: {list(STYLE_KEYS)}")
        return styles

    @field_validator("modes")
    @classmethod
    def _known_modes(cls, modes: list[str] | None) -> list[str] | None:
        unknown = sorted(set(modes or ()) - set(MODES))
        if unknown:
            raise ValueError(f"unknown mode(s) {unknown}; known: {list(MODES)}")
        return modes


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    asset: Literal[SOURCE_ASSETS]  # type: ignore[valid-type]
    selection: Selection = Selection()
    quality_tier: Literal["low", "medium", "high"]
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
    sources: list[SourceSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _file_name(cls, name: str) -> str:
        if name in RESERVED_PHASE_NAMES:
            raise ValueError(f"phase name {name!r} is reserved: exports use {RESERVED_PHASE_NAMES}")
        return validate_name(name, kind="phase name")

    @model_validator(mode="after")
    def _sources_unique_shares_sum_to_one(self) -> PhaseSpec:
        names = [s.name for s in self.sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"phase {self.name!r}: source name(s) {repeated} used twice")
        total = sum(s.share for s in self.sources)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"phase {self.name!r}: source shares sum to {total:g}, not 1")
        return self


class BlendSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    total_tokens: int = Field(gt=0)
    seed: int = 0
    phases: list[PhaseSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _phases_unique_fractions_sum_to_one(self) -> BlendSpec:
        names = [p.name for p in self.phases]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"phase name(s) {repeated} used twice")
        total = sum(p.fraction for p in self.phases)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"phase fractions sum to {total:g}, not 1")
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
    return spec


def blend_names(blends_dir: Path) -> list[str]:
    return sorted(p.stem for p in blends_dir.glob("*.yaml")) if blends_dir.is_dir() else []


def check_selection_exists(
    spec: BlendSpec, *, known_shards: set[str], known_families: set[str], path: Path
) -> None:
    """Names that are valid in general but absent here (an unregistered shard, say)."""
    for p, phase in enumerate(spec.phases):
        for s, source in enumerate(phase.sources):
            where = f"{path}: phases.{p}.sources.{s} ({source.name})"
            missing = sorted(set(source.selection.shards or ()) - known_shards)
            if missing:
                raise BlendSpecError(f"{where}.selection.shards: unknown shard(s) {missing}")
            missing = sorted(set(source.selection.families or ()) - known_families)
            if missing:
                raise BlendSpecError(
                    f"{where}.selection.families: unknown task famil(ies) {missing}"
                )
