"""The local Dagster instance used by the `mind` CLI and `make ui`.

DAGSTER_HOME defaults to the project directory, whose `dagster.yaml` keeps all instance storage
under `<data_dir>/dagster` through the MIND_DAGSTER_STORAGE_DIR variable set here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dagster import DagsterInstance

from mind_assets.corpus.shards import ShardSpec, save_shard_spec
from mind_assets.settings import PROJECT_DIR, MindSettings

SHARDS_PARTITION = "shards"


def configure_local_instance_env(settings: MindSettings) -> None:
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_DIR))
    os.environ.setdefault("MIND_DAGSTER_STORAGE_DIR", str(settings.dagster_storage_dir))
    settings.dagster_storage_dir.mkdir(parents=True, exist_ok=True)


def local_instance(settings: MindSettings) -> DagsterInstance:
    configure_local_instance_env(settings)
    return DagsterInstance.get()


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
