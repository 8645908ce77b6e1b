"""GPU pods that schedule: the `dagster-k8s/config` op tags of the `llm` pool, the two deploy
modes' ConfigMaps, and the Kubernetes Jobs dagster-k8s renders from deploy/dagster.yaml for a
`conversations` partition (dagster-k8s's own code; no cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from dagster import AssetsDefinition

from mind_assets.definitions import ASSETS
from mind_assets.llm.pods import K8S_CONFIG_TAG, llm_pod_config, llm_step_tags
from mind_assets.settings import PROJECT_DIR, MindSettings
from mind_assets_tests.k8s_jobs import conversations_run, deployed_instance, render_run_job

MODES = PROJECT_DIR / "deploy" / "modes"


def mode_environment(mode: str) -> dict[str, str]:
    configmap = yaml.safe_load((MODES / f"{mode}.yaml").read_text())
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["name"] == "mind-assets-env"
    return {name: str(value) for name, value in configmap["data"].items()}


def settings_from(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> MindSettings:
    for name in [n for n in os.environ if n.startswith("MIND_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return MindSettings()


def container(job: dict) -> dict:
    [only] = job["spec"]["template"]["spec"]["containers"]
    return only


def test_offline_llm_step_requests_one_gpu_per_tensor_parallel_rank(monkeypatch):
    settings = settings_from(
        monkeypatch,
        {
            "MIND_ENGINE_MODE": "offline",
            "MIND_TENSOR_PARALLEL_SIZE": "4",
            "MIND_K8S__GPU_TOLERATIONS": '[{"key": "gpu-pool", "operator": "Equal", '
            '"value": "h100", "effect": "NoSchedule"}]',
            "MIND_K8S__GPU_NODE_SELECTOR": '{"nvidia.com/gpu.product": "H100"}',
        },
    )
    config = llm_pod_config(settings)
    resources = config["container_config"]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "4"}
    assert resources["requests"]["nvidia.com/gpu"] == "4"
    assert {"name": "MIND_TENSOR_PARALLEL_SIZE", "value": "4"} in config["container_config"]["env"]
    pod = config["pod_spec_config"]
    assert pod["tolerations"] == [
        {"key": "gpu-pool", "operator": "Equal", "value": "h100", "effect": "NoSchedule"}
    ]
    assert pod["node_selector"] == {"nvidia.com/gpu.product": "H100"}
    # Tensor-parallel workers talk through /dev/shm, which a container caps at 64 MiB.
    assert pod["volumes"][0]["empty_dir"]["medium"] == "Memory"
    assert config["container_config"]["volume_mounts"] == [
        {"name": "dshm", "mount_path": "/dev/shm"}
    ]


def test_single_gpu_step_gets_no_shared_memory_volume(monkeypatch):
    config = llm_pod_config(settings_from(monkeypatch, {"MIND_ENGINE_MODE": "offline"}))
    assert config["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert "volumes" not in config["pod_spec_config"]


def test_server_mode_step_asks_for_no_gpu(monkeypatch):
    settings = settings_from(monkeypatch, {"MIND_ENGINE_MODE": "server"})
    assert llm_step_tags(settings) == {}


def test_misspelt_toleration_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="efect"):
        settings_from(
            monkeypatch, {"MIND_K8S__GPU_TOLERATIONS": '[{"key": "gpu", "efect": "NoSchedule"}]'}
        )


def test_every_generating_asset_carries_the_llm_pod_tag():
    generating = {
        asset.key.to_user_string(): asset
        for asset in ASSETS
        if isinstance(asset, AssetsDefinition) and any("vllm" in spec.kinds for spec in asset.specs)
    }
    assert set(generating) == {
        "conversations",
        "task_qa",
        "prismatic_task_qa",
        "problem_difficulty",
        "solution_traces",
    }
    # Definitions loaded under this process's MIND_* variables; the tags follow them.
    expected = llm_step_tags(MindSettings())
    for name, asset in generating.items():
        assert asset.op.pool == "llm", name
        assert {k: v for k, v in asset.op.tags.items() if k == K8S_CONFIG_TAG} == expected, name


@pytest.mark.parametrize("mode", ["server", "offline-gpu"])
def test_deploy_mode_configmap_is_valid_settings(monkeypatch, mode):
    settings = settings_from(monkeypatch, mode_environment(mode))
    if mode == "server":
        assert (settings.engine_mode, settings.k8s.executor) == ("server", "multiprocess")
        assert settings.server_urls and llm_step_tags(settings) == {}
    else:
        assert (settings.engine_mode, settings.k8s.executor) == ("offline", "k8s_job")
        assert K8S_CONFIG_TAG in llm_step_tags(settings)


def test_offline_conversations_step_job_requests_gpus(tmp_path):
    """Definitions load in a fresh process under the offline ConfigMap (tensor parallelism 2),
    as in the code location server; dagster-k8s renders the run's and the step's Jobs."""
    environment = {
        **{n: v for n, v in os.environ.items() if not n.startswith("MIND_")},
        **mode_environment("offline-gpu"),
        "MIND_TENSOR_PARALLEL_SIZE": "2",
        "MIND_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(PROJECT_DIR),
    }
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "mind_assets_tests.k8s_jobs", str(tmp_path)],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rendered = json.loads(done.stdout)
    step, run = rendered["step"], rendered["run"]
    assert step["executor"] == "k8s"  # MIND_K8S__EXECUTOR=k8s_job chose dagster-k8s's executor

    job = step["job"]
    pod = job["spec"]["template"]["spec"]
    main = container(job)
    assert job["metadata"]["labels"]["dagster/op"] == "conversations"
    assert main["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    # CPU and memory from the ConfigMap's MIND_K8S__LLM_CPU and MIND_K8S__LLM_MEMORY.
    assert main["resources"]["requests"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["MIND_ENGINE_MODE"] == "offline"
    assert env["MIND_TENSOR_PARALLEL_SIZE"] == "2"
    assert env["DAGSTER_RUN_STEP_KEY"] == "conversations"
    # MIND_* settings and the Postgres secret reach the step like every pod of the deployment.
    assert {"configMapRef": {"name": "mind-assets-env"}} in main["envFrom"]
    assert {"secretRef": {"name": "mind-assets-postgres"}} in main["envFrom"]
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    assert mounts == {
        "mind-data": "/data",
        "dagster-instance": env["DAGSTER_HOME"],
        "dshm": "/dev/shm",
    }
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]

    # The run worker only orchestrates: no GPU held for the run's whole length.
    run_container = container(run["job"])
    assert "nvidia.com/gpu" not in json.dumps(run_container["resources"])
    assert "tolerations" not in run["job"]["spec"]["template"]["spec"]
    assert (
        run["job"]["metadata"]["labels"]["dagster/run-id"]
        == job["metadata"]["labels"]["dagster/run-id"]
    )


def test_server_mode_run_pod_asks_for_no_gpu(tmp_path):
    """Server mode runs every step inside the run pod (multiprocess executor); that pod is built
    from deploy/dagster.yaml and the run's tags alone, and asks for CPU and memory only."""
    with deployed_instance(tmp_path) as (instance, config):
        _, run = conversations_run(instance)
        rendered = render_run_job(instance, config, run)
    resources = container(rendered["job"])["resources"]
    assert resources == {"requests": {"cpu": "4", "memory": "16Gi"}}
    assert rendered["namespace"] == "mind-assets"
