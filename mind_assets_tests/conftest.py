"""Shared fixtures: a fresh data root per test, one converted model and engine per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, MultiPartitionKey, instance_for_test, materialize

from mind_assets.conversations.assets import conversations, mind_prompts
from mind_assets.conversations.styles import STYLE_KEYS
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.shards import ShardSpec, register_shard
from mind_assets.definitions import ASSETS
from mind_assets.lib.storage import asset_path
from mind_assets.llm.offline_engine import reset_prefix_caches
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import PROJECT_DIR, MindSettings, get_settings

SHARED_DATA = Path(os.environ.get("MIND_SHARED_DATA", PROJECT_DIR.parent / "shared" / "data"))
NAPKIN = SHARED_DATA / "napkin" / "sections.jsonl"
GSM8K_TRAIN = SHARED_DATA / "gsm8k" / "train.jsonl"
GSM8K_TEST = SHARED_DATA / "gsm8k" / "test.jsonl"
# Converted models are cached across test sessions (conversion is atomic and locked).
MODELS_DIR = Path(os.environ.get("MIND_TEST_MODELS_DIR", PROJECT_DIR / "data" / "models"))


# What every test's settings share, so that every test asks for the same engine configuration
# and the session loads one engine. MIND_DTYPE stays unset: tests run at the machine's `auto`.
TEST_ENVIRONMENT = {
    "MIND_MODELS_DIR": str(MODELS_DIR),
    "MIND_KEEP_ENGINE_BETWEEN_RUNS": "1",
    "MIND_MAX_TOKENS": "160",
    # Two engines may be alive at once (this process and a subprocess test); keep each modest.
    "MIND_KV_CACHE_GIB": "1",
    # No benchmark split is available offline but GSM8K's, and only through the `mirror`
    # fixture: tests that check decontamination name their benchmarks themselves.
    "MIND_DECONTAMINATION__BENCHMARKS": "[]",
}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MindSettings:
    """Settings with a fresh data root; engine kept loaded across the session's runs."""
    monkeypatch.setenv("MIND_DATA_DIR", str(tmp_path / "data"))
    for name, value in TEST_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    return get_settings()


@pytest.fixture(scope="session", autouse=True)
def private_datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`datasets` caches what it loaded from a folder by the folder's path, and the paths of
    pytest's temporary directories come round again across runs: each session reads its own."""
    import datasets

    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("hf-datasets-cache")
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
        yield


@pytest.fixture(autouse=True)
def fresh_prefix_cache() -> None:
    """Each test sees the engine as if freshly loaded: the session's shared engine keeps its
    prefix cache between tests, and in bf16 that can change outputs, so results would depend on
    which tests ran before."""
    reset_prefix_caches()


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def llm(settings: MindSettings) -> LLMResource:
    return LLMResource.from_settings(settings)


def napkin_shard(name: str, rows: int) -> ShardSpec:
    """A shard over the first `rows` real napkin sections, read in place."""
    return ShardSpec(name=name, kind="local", paths=[str(NAPKIN)], start=0, stop=rows)


@pytest.fixture
def register(instance: DagsterInstance, settings: MindSettings):
    def _register(spec: ShardSpec) -> ShardSpec:
        register_shard(instance, settings, spec)
        return spec

    return _register


@pytest.fixture
def run(instance: DagsterInstance, llm: LLMResource):
    """Materialize a selection of the project's assets in-process on the test instance."""

    def _run(selection, partition_key=None, raise_on_error=True, resources=None):
        return materialize(
            ASSETS,
            selection=selection,
            partition_key=partition_key,
            instance=instance,
            resources=resources or {"llm": llm},
            raise_on_error=raise_on_error,
        )

    return _run


TASK_FIXTURES = PROJECT_DIR / "mind_assets_tests" / "fixtures" / "task_mirror"


def link_task_mirror(root: Path) -> Path:
    """The hand-written fixtures plus the real GSM8K splits, linked (not copied) in HF layout."""
    (root / "openai" / "gsm8k" / "main").mkdir(parents=True)
    (root / "openai" / "gsm8k" / "main" / "train.jsonl").symlink_to(GSM8K_TRAIN)
    (root / "openai" / "gsm8k" / "main" / "test.jsonl").symlink_to(GSM8K_TEST)
    for dataset in ("tau", "allenai"):
        (root / dataset).symlink_to(TASK_FIXTURES / dataset)
    return root


@pytest.fixture
def mirror(tmp_path):
    return link_task_mirror(tmp_path / "mirror")


# The session's shared generations: the first WORLD_SECTIONS real napkin sections (6 chunks)
# through raw_documents, chunks and all seven MIND styles, with the real engine, once.
WORLD_SHARD = "napkin"
WORLD_SECTIONS = 3


@dataclass
class NapkinWorld:
    """Conversations generated once per session through Dagster; tests read them, or copy them
    into their own data root, where materializing `conversations` again reuses every row by
    request hash (the resume path) instead of calling the engine."""

    data_dir: Path
    instance: DagsterInstance
    chunk_ids: set[str]
    metadata: dict[str, dict]  # style -> the conversations materialization's metadata

    def rows(self, style: str) -> list[dict]:
        return pq.read_table(
            asset_path(self.data_dir, "conversations", WORLD_SHARD, style)
        ).to_pylist()

    def copy_generations(self, data_dir: Path, styles: Iterable[str] = STYLE_KEYS) -> None:
        for style in styles:
            target = asset_path(data_dir, "conversations", WORLD_SHARD, style)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(asset_path(self.data_dir, "conversations", WORLD_SHARD, style), target)


@pytest.fixture(scope="session")
def napkin_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NapkinWorld]:
    data_dir = tmp_path_factory.mktemp("world") / "data"
    with pytest.MonkeyPatch.context() as patch, instance_for_test() as instance:
        patch.setenv("MIND_DATA_DIR", str(data_dir))
        for name, value in TEST_ENVIRONMENT.items():
            patch.setenv(name, value)
        world_settings = get_settings()
        register_shard(instance, world_settings, napkin_shard(WORLD_SHARD, WORLD_SECTIONS))
        resources = {"llm": LLMResource.from_settings(world_settings)}
        materialize(ASSETS, selection=[mind_prompts], instance=instance, resources=resources)
        assert materialize(
            ASSETS,
            selection=[raw_documents, chunks],
            partition_key=WORLD_SHARD,
            instance=instance,
            resources=resources,
        ).success
        metadata = {}
        for style in STYLE_KEYS:
            result = materialize(
                ASSETS,
                selection=[conversations],
                partition_key=MultiPartitionKey({"shard": WORLD_SHARD, "style": style}),
                instance=instance,
                resources=resources,
            )
            assert result.success
            [event] = result.asset_materializations_for_node("conversations")
            metadata[style] = dict(event.metadata)
        chunk_ids = set(
            pq.read_table(asset_path(data_dir, "chunks", WORLD_SHARD))["chunk_id"].to_pylist()
        )
        yield NapkinWorld(data_dir, instance, chunk_ids, metadata)
