"""The local Dagster instance used by the `mind` CLI and `make ui`.

DAGSTER_HOME defaults to the project directory, whose `dagster.yaml` keeps all instance storage
under `<data_dir>/dagster` through the MIND_DAGSTER_STORAGE_DIR variable set here.
"""

from __future__ import annotations

import os

from dagster import DagsterInstance

from mind_assets.settings import PROJECT_DIR, MindSettings

# The dynamic partitions holding registered corpus shards (see corpus/shards.py).
SHARDS_PARTITION = "shards"


def configure_local_instance_env(settings: MindSettings) -> None:
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_DIR))
    os.environ.setdefault("MIND_DAGSTER_STORAGE_DIR", str(settings.dagster_storage_dir))
    settings.dagster_storage_dir.mkdir(parents=True, exist_ok=True)


def local_instance(settings: MindSettings) -> DagsterInstance:
    configure_local_instance_env(settings)
    return DagsterInstance.get()
