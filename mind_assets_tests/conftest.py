"""Shared fixtures: a fresh data root per test, one converted model and engine per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, instance_for_test, materialize

from mind_assets.corpus.shards import ShardSpec
from mind_assets.definitions import ASSETS
from mind_assets.lib.instance import register_shard
from mind_assets.llm.offline_engine import reset_prefix_caches
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import PROJECT_DIR, MindSettings, get_settings

SHARED_DATA = Path(os.environ.get("MIND_SHARED_DATA", PROJECT_DIR.parent / "shared" / "data"))
NAPKIN = SHARED_DATA / "napkin" / "sections.jsonl"
GSM8K_TRAIN = SHARED_DATA / "gsm8k" / "train.jsonl"
GSM8K_TEST = SHARED_DATA / "gsm8k" / "test.jsonl"
# Converted models are cached across test sessions (conversion is atomic and locked).
MODELS_DIR = Path(os.environ.get("MIND_TEST_MODELS_DIR", PROJECT_DIR / "data" / "models"))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MindSettings:
    """Settings with a fresh data root; engine kept loaded across the session's runs."""
    monkeypatch.setenv("MIND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MIND_MODELS_DIR", str(MODELS_DIR))
    monkeypatch.setenv("MIND_KEEP_ENGINE_BETWEEN_RUNS", "1")
    monkeypatch.setenv("MIND_MAX_TOKENS", "160")
    # Two engines may be alive at once (this process and a subprocess test); keep each modest.
    monkeypatch.setenv("MIND_KV_CACHE_GIB", "1")
    return get_settings()


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


@pytest.fixture
def mirror(tmp_path):
    """The hand-written fixtures plus the real GSM8K splits, linked (not copied) in HF layout."""
    root = tmp_path / "mirror"
    (root / "openai" / "gsm8k" / "main").mkdir(parents=True)
    (root / "openai" / "gsm8k" / "main" / "train.jsonl").symlink_to(GSM8K_TRAIN)
    (root / "openai" / "gsm8k" / "main" / "test.jsonl").symlink_to(GSM8K_TEST)
    for dataset in ("tau", "allenai"):
        (root / dataset).symlink_to(TASK_FIXTURES / dataset)
    return root
