"""What the Kubernetes pod of an LLM step asks for: the `dagster-k8s/config` op tag of every
asset in the `llm` pool. An offline engine needs MIND_TENSOR_PARALLEL_SIZE GPUs in its own pod;
a server-mode step is an HTTP client of the vLLM servers and asks for none."""

from __future__ import annotations

import json
from typing import Any

from dagster import BackfillPolicy

from mind_assets.settings import MindSettings, get_settings

# Read by dagster-k8s: the run launcher from run tags, the k8s_job_executor from step (op) tags.
K8S_CONFIG_TAG = "dagster-k8s/config"
SHM_VOLUME = "dshm"


def llm_pod_config(settings: MindSettings) -> dict[str, Any]:
    """dagster-k8s user-defined config (`container_config`, `pod_spec_config`) for the pod of
    one LLM step; empty in server mode, where the launcher's CPU defaults are enough."""
    if settings.engine_mode == "server":
        return {}
    k8s = settings.k8s
    gpus = str(settings.tensor_parallel_size)
    container: dict[str, Any] = {
        # Extended resources are never overcommitted: Kubernetes wants requests equal to limits.
        "resources": {
            "requests": {"cpu": k8s.llm_cpu, "memory": k8s.llm_memory, k8s.gpu_resource: gpus},
            "limits": {k8s.gpu_resource: gpus},
        },
        # The engine's tensor-parallel size and the GPUs granted come from one number, whatever
        # the pod's ConfigMap says (explicit env wins over envFrom).
        "env": [
            {"name": "MIND_ENGINE_MODE", "value": "offline"},
            {"name": "MIND_TENSOR_PARALLEL_SIZE", "value": gpus},
        ],
    }
    pod: dict[str, Any] = {
        "tolerations": [t.model_dump(exclude_none=True) for t in k8s.gpu_tolerations]
    }
    if k8s.gpu_node_selector:
        pod["node_selector"] = dict(k8s.gpu_node_selector)
    if settings.tensor_parallel_size > 1:
        pod["volumes"] = [
            {"name": SHM_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": k8s.shm_size}}
        ]
        container["volume_mounts"] = [{"name": SHM_VOLUME, "mount_path": "/dev/shm"}]
    return {"container_config": container, "pod_spec_config": pod}


def llm_step_tags(settings: MindSettings | None = None) -> dict[str, str]:
    """Op tags for an asset in the `llm` pool, from the settings where definitions load."""
    config = llm_pod_config(settings or get_settings())
    return {K8S_CONFIG_TAG: json.dumps(config, sort_keys=True)} if config else {}


def generating_asset(settings: MindSettings | None = None) -> dict[str, Any]:
    """The `@asset` arguments every asset that calls the engine shares: the `llm` pool (so the
    deployment caps concurrent engines), the pod its step asks for, and one run per partition in
    backfills (each run loads one engine for one whole batch, and Dagster's single-run backfills
    mishandle partial multi-partition selections)."""
    return {
        "pool": "llm",
        "op_tags": llm_step_tags(settings),
        "backfill_policy": BackfillPolicy.multi_run(1),
    }
