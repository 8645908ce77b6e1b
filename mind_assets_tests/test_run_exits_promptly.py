"""A generation run launched the way Dagster launches runs (a process per step) exits promptly:
the engine must not keep the step or the run process alive after the last step."""

import os
import subprocess
import sys
import time

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter, materialize

from mind_assets.cli import main as mind_cli
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.definitions import ASSETS
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import get_settings
from mind_assets_tests.conftest import MODELS_DIR, NAPKIN

pytestmark = pytest.mark.engine
BIN = os.path.dirname(sys.executable)


def run(command, env, timeout):
    return subprocess.run(command, env=env, timeout=timeout, capture_output=True, text=True)


def test_generation_run_exits_within_a_minute_of_its_last_step(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    instance_env = {
        "DAGSTER_HOME": str(home),
        "MIND_DATA_DIR": str(tmp_path / "data"),
        "MIND_MODELS_DIR": str(MODELS_DIR),
        "MIND_MAX_TOKENS": "32",
        "MIND_KV_CACHE_GIB": "1",
        "MIND_DECONTAMINATION__BENCHMARKS": "[]",  # no benchmark split offline
    }
    env = {**os.environ, **instance_env}
    env.pop("MIND_KEEP_ENGINE_BETWEEN_RUNS", None)
    # The shard and its chunks are made in this process (no engine is involved), on the same
    # instance and data root: only the generation run is under test.
    for name, value in instance_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MIND_DAGSTER_STORAGE_DIR", str(tmp_path / "dagster_storage"))
    assert mind_cli(["shards", "add", "one", str(NAPKIN), "--rows", "0:1"]) == 0
    with DagsterInstance.from_config(str(home)) as instance:
        resources = {"llm": LLMResource.from_settings(get_settings())}  # loads nothing here
        corpus = materialize(
            ASSETS,
            selection=[raw_documents, chunks],
            partition_key="one",
            instance=instance,
            resources=resources,
        )
        assert corpus.success

    materialize_cli = [f"{BIN}/dagster", "asset", "materialize", "-m", "mind_assets.definitions"]
    generation = run(
        [*materialize_cli, "--select", "conversations", "--partition", "one|teacher_student"],
        env,
        600,
    )
    exited_at = time.time()
    assert generation.returncode == 0, generation.stderr[-3000:]

    instance = DagsterInstance.from_config(str(home))
    step_ends = instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.STEP_SUCCESS), ascending=False, limit=1
    )
    assert step_ends, "the conversations step succeeded"
    last_step_at = step_ends[0].event_log_entry.timestamp
    materialization = instance.get_latest_materialization_event(AssetKey("conversations"))
    assert materialization.asset_materialization.metadata["generated_requests"].value >= 1
    assert exited_at - last_step_at < 60, f"run process lingered {exited_at - last_step_at:.0f} s"
