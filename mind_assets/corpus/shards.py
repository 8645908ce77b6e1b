"""The shard registry: what each key of the `shards` dynamic partition reads.

A shard is a named slice of a corpus: local jsonl/parquet files, or a row range of a Hugging Face
dataset split. Its spec is a JSON file under `<data_dir>/shard_specs/`, written atomically;
the Dagster partition key is the shard name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mind_assets.lib import object_store
from mind_assets.lib.instance import SHARDS_PARTITION
from mind_assets.lib.storage import validate_name, write_json_atomic

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from mind_assets.settings import MindSettings

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
HF_PREFIX = "hf://"


class ShardError(ValueError):
    """A shard that cannot be registered or read."""


class FieldMap(BaseModel):
    """Which source fields hold the text and its metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = "text"
    id: str = "id"
    url: str = "url"
    title: str = "title"


class ShardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["local", "hf"]
    paths: list[str] = Field(default_factory=list, description="Local files (kind=local).")
    dataset: str | None = Field(default=None, description="Hugging Face dataset id (kind=hf).")
    config_name: str | None = None
    split: str = "train"
    start: int = Field(default=0, ge=0)
    stop: int | None = Field(default=None, ge=1)
    fields: FieldMap = FieldMap()
    registered_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @model_validator(mode="after")
    def _consistent(self) -> ShardSpec:
        validate_name(self.name, kind="shard name")
        if self.kind == "local" and not self.paths:
            raise ValueError("a local shard needs at least one path")
        if self.kind == "hf" and not self.dataset:
            raise ValueError("a Hugging Face shard needs a dataset id")
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(f"row range {self.start}:{self.stop} is empty")
        return self


def parse_row_range(text: str) -> tuple[int, int | None]:
    """'100:200' -> (100, 200); '100:' -> (100, None); ':50' -> (0, 50)."""
    start_text, sep, stop_text = text.partition(":")
    if not sep:
        raise ShardError(f"row range {text!r} must look like START:STOP")
    try:
        start = int(start_text) if start_text else 0
        stop = int(stop_text) if stop_text else None
    except ValueError as error:
        raise ShardError(f"row range {text!r} must hold integers") from error
    return start, stop


def make_shard_spec(
    name: str,
    sources: list[str],
    *,
    split: str = "train",
    rows: str | None = None,
    config_name: str | None = None,
    fields: FieldMap | None = None,
) -> ShardSpec:
    """Build and validate a spec from CLI-style arguments; local paths must exist."""
    validate_name(name, kind="shard name")
    if not sources:
        raise ShardError("name at least one corpus file or an hf://DATASET source")
    start, stop = parse_row_range(rows) if rows else (0, None)
    try:
        if len(sources) == 1 and sources[0].startswith(HF_PREFIX):
            return ShardSpec(
                name=name,
                kind="hf",
                dataset=sources[0][len(HF_PREFIX) :],
                config_name=config_name,
                split=split,
                start=start,
                stop=stop,
                fields=fields or FieldMap(),
            )
        paths = []
        for source in sources:
            path = Path(source).expanduser().resolve()
            if not path.is_file():
                raise ShardError(f"corpus file not found: {source}")
            if path.suffix not in LOCAL_SUFFIXES:
                raise ShardError(
                    f"{source}: unsupported file type (use {', '.join(LOCAL_SUFFIXES)})"
                )
            paths.append(str(path))
        return ShardSpec(
            name=name,
            kind="local",
            paths=paths,
            start=start,
            stop=stop,
            fields=fields or FieldMap(),
        )
    except ValidationError as error:
        raise ShardError(f"invalid shard {name!r}: {error}") from error


def spec_path(specs_dir: Path, name: str) -> Path:
    return specs_dir / f"{validate_name(name, kind='shard name')}.json"


def save_shard_spec(specs_dir: Path, spec: ShardSpec) -> Path:
    return write_json_atomic(spec.model_dump(), spec_path(specs_dir, spec.name))


def load_shard_spec(specs_dir: Path, name: str) -> ShardSpec:
    path = spec_path(specs_dir, name)
    object_store.pull(path)
    if not path.is_file():
        raise ShardError(
            f"shard {name!r} has no spec at {path}; "
            f"register it with `mind shards add {name} PATH...`"
        )
    try:
        return ShardSpec(**json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as error:
        raise ShardError(f"shard spec {path} is invalid: {error}") from error


def list_shard_specs(specs_dir: Path) -> list[ShardSpec]:
    if not specs_dir.is_dir():
        return []
    return [load_shard_spec(specs_dir, p.stem) for p in sorted(specs_dir.glob("*.json"))]


def register_shard(instance: DagsterInstance, settings: MindSettings, spec: ShardSpec) -> None:
    """Save the shard's spec and add its key to the `shards` dynamic partitions."""
    save_shard_spec(settings.shard_specs_dir, spec)
    if not instance.has_dynamic_partition(SHARDS_PARTITION, spec.name):
        instance.add_dynamic_partitions(SHARDS_PARTITION, [spec.name])


def register_shards(
    instance: DagsterInstance, settings: MindSettings, specs: Sequence[ShardSpec]
) -> list[str]:
    """Save each spec and add the missing keys to the `shards` partitions in one call (the
    per-key check of `register_shard`, or of the sensor daemon's partition requests, costs a
    query per shard). Returns the keys added."""
    for spec in specs:
        save_shard_spec(settings.shard_specs_dir, spec)
    names = list(dict.fromkeys(spec.name for spec in specs))
    if not names:
        return []
    existing = instance.get_existing_dynamic_partitions(SHARDS_PARTITION, names)
    added = [name for name in names if name not in existing]
    if added:
        instance.add_dynamic_partitions(SHARDS_PARTITION, added)
    return added
