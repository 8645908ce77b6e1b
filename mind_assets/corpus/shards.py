"""The shard registry: what each key of the `shards` dynamic partition reads.

A shard is a named slice of a corpus: local jsonl/parquet files, or a row range of a Hugging Face
dataset split. Its spec is a JSON document of the data root (the gateway knows where), written
atomically; the Dagster partition key is the shard name. Building a spec from what a user names
is in `shard_specs.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mind_assets.lib.instance import SHARDS_PARTITION
from mind_assets.lib.storage import (
    OutputReadError,
    read_json,
    shard_spec_file,
    shard_spec_files,
    validate_name,
    write_json_atomic,
)

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


def save_shard_spec(data_dir: Path, spec: ShardSpec) -> Path:
    return write_json_atomic(spec.model_dump(), shard_spec_file(data_dir, spec.name))


def load_shard_spec(data_dir: Path, name: str) -> ShardSpec:
    path = shard_spec_file(data_dir, name)
    try:
        payload = read_json(path)
    except OutputReadError as error:
        raise ShardError(f"shard spec {path} is invalid: {error}") from error
    if payload is None:
        raise ShardError(
            f"shard {name!r} has no spec at {path}; "
            f"register it with `mind shards add {name} PATH...`"
        )
    try:
        return ShardSpec(**payload)
    except (TypeError, ValidationError) as error:
        raise ShardError(f"shard spec {path} is invalid: {error}") from error


def list_shard_specs(data_dir: Path) -> list[ShardSpec]:
    return [load_shard_spec(data_dir, p.stem) for p in shard_spec_files(data_dir)]


def register_shard(instance: DagsterInstance, settings: MindSettings, spec: ShardSpec) -> None:
    """Save the shard's spec and add its key to the `shards` dynamic partitions."""
    save_shard_spec(settings.data_dir, spec)
    if not instance.has_dynamic_partition(SHARDS_PARTITION, spec.name):
        instance.add_dynamic_partitions(SHARDS_PARTITION, [spec.name])


def register_shards(
    instance: DagsterInstance, settings: MindSettings, specs: Sequence[ShardSpec]
) -> list[str]:
    """Save each spec and add the missing keys to the `shards` partitions in one call (the
    per-key check of `register_shard`, or of the sensor daemon's partition requests, costs a
    query per shard). Returns the keys added."""
    for spec in specs:
        save_shard_spec(settings.data_dir, spec)
    names = list(dict.fromkeys(spec.name for spec in specs))
    if not names:
        return []
    existing = instance.get_existing_dynamic_partitions(SHARDS_PARTITION, names)
    added = [name for name in names if name not in existing]
    if added:
        instance.add_dynamic_partitions(SHARDS_PARTITION, added)
    return added
