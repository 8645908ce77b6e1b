"""Which conversation partitions are out of date with the current prompts and model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from mind_assets.conversations.styles import STYLE_KEYS, style_prompt_path
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.storage import asset_path


@dataclass(frozen=True)
class UnsyncedPartition:
    shard: str
    style: str
    reason: str


def shards_with_conversations(data_dir: Path, shards: list[str]) -> list[str]:
    """Those of `shards` that have a directory under `<data_dir>/conversations`, sorted."""
    root = data_dir / "conversations"
    if not root.is_dir():
        return []
    wanted = set(shards)
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.name in wanted and e.is_dir())


def unsynced_conversation_partitions(
    data_dir: Path, prompts_dir: Path, model_name: str, shards: list[str]
) -> list[UnsyncedPartition]:
    """Materialized partitions generated with another prompt version or model, in shard order.

    Only shards with a conversations directory are looked at: one directory listing instead of a
    path check per partition, which at 10,000 registered shards (70,000 partitions) cost the
    schedule's tick about 12 CPU seconds (benchmarks/scale.py)."""
    versions = {s: load_prompt(style_prompt_path(prompts_dir, s)).version for s in STYLE_KEYS}
    unsynced = []
    for shard in shards_with_conversations(data_dir, shards):
        for style in STYLE_KEYS:
            path = asset_path(data_dir, "conversations", shard, style)
            if not path.is_file():
                continue
            table = pq.read_table(path, columns=["prompt_version", "model"])
            used_versions = set(table["prompt_version"].to_pylist())
            used_models = set(table["model"].to_pylist())
            if used_versions and used_versions != {versions[style]}:
                unsynced.append(
                    UnsyncedPartition(
                        shard, style, f"prompt {sorted(used_versions)} -> {versions[style]}"
                    )
                )
            elif used_models and used_models != {model_name}:
                unsynced.append(
                    UnsyncedPartition(shard, style, f"model {sorted(used_models)} -> {model_name}")
                )
    return unsynced
