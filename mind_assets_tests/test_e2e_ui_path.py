"""The UI path: a real dagster-webserver on 127.0.0.1 against workspace.yaml; through the GraphQL
API the UI uses, launch one conversations partition, wait for success, read back its
materialization metadata and asset check results."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, materialize

from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.shards import register_shard
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import PROJECT_DIR
from mind_assets_tests.conftest import napkin_shard

pytestmark = pytest.mark.engine
BIN = Path(sys.executable).parent

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
STATUS = """query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""
MATERIALIZATION = """
query Materialization($partition: String!) {
  assetOrError(assetKey: {path: ["conversations"]}) {
    ... on Asset {
      assetMaterializations(limit: 1, partitions: [$partition]) {
        runId partition
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}"""
CHECKS = """
query Checks($name: String!) {
  assetCheckExecutions(assetKey: {path: ["conversations"]}, checkName: $name, limit: 1) {
    runId status evaluation { success }
  }
}"""


def graphql(url: str, query: str, variables: dict) -> dict:
    response = httpx.post(
        f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60
    )
    response.raise_for_status()
    payload = response.json()
    assert "errors" not in payload, payload["errors"]
    return payload["data"]


def test_launch_a_conversations_partition_through_the_graphql_api(
    settings, llm, tmp_path, monkeypatch
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MIND_MAX_TOKENS", "48")
    instance = DagsterInstance.from_config(str(home))
    register_shard(instance, settings, napkin_shard("ui", 2))
    materialize(
        [raw_documents, chunks],
        partition_key="ui",
        instance=instance,
        resources={"llm": LLMResource.from_settings(settings)},
    )

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MIND_KEEP_ENGINE_BETWEEN_RUNS": "0"}

    def start(*command: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*command, "-w", "workspace.yaml"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    # The webserver serves the UI and its GraphQL API; the daemon dequeues launched runs (the
    # instance's default run coordinator queues them), as `make ui` does with `dagster dev`.
    server = start(str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port))
    daemon = start(str(BIN / "dagster-daemon"), "run")
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "webserver did not start"
            time.sleep(2)

        partition = "ui|teacher_student"
        params = {
            "selector": {
                "repositoryLocationName": "mind_assets",
                "repositoryName": "__repository__",
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": ["conversations"]}],
            },
            "executionMetadata": {
                "tags": [
                    {"key": "dagster/partition", "value": partition},
                    {"key": "dagster/partition/shard", "value": "ui"},
                    {"key": "dagster/partition/style", "value": "teacher_student"},
                ]
            },
        }
        launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline = time.monotonic() + 600
        status = None
        while time.monotonic() < deadline:
            status = graphql(url, STATUS, {"id": run_id})["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(3)
        assert status == "SUCCESS", status

        materialization = graphql(url, MATERIALIZATION, {"partition": partition})["assetOrError"]
        latest = materialization["assetMaterializations"][0]
        entries = {e["label"]: e for e in latest["metadataEntries"]}
        assert latest["runId"] == run_id and latest["partition"] == partition
        assert entries["dagster/row_count"]["intValue"] > 0
        assert entries["prompt_id"]["text"] == "mind/teacher_student"
        for check in ("every_chunk_has_a_conversation", "lineage_non_null"):
            execution = graphql(url, CHECKS, {"name": check})["assetCheckExecutions"][0]
            assert execution["runId"] == run_id and execution["evaluation"]["success"], execution
    finally:
        for process in (server, daemon):
            os.killpg(process.pid, 9)
            process.wait(timeout=30)
