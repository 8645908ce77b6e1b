"""Renders the Kubernetes Jobs dagster-k8s would create for one `conversations` partition, with
no cluster: the run launcher and the k8s_job_executor's step handler of `deploy/dagster.yaml`,
driven through dagster-k8s's own code with a batch API that records the Job instead of sending
it. Run as a script (`python -m mind_assets_tests.k8s_jobs`) to render under the MIND_*
variables of that process, since op tags are read when the definitions load; it prints JSON."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from dagster import AssetKey, MultiPartitionKey, instance_for_test
from dagster._config import process_config, resolve_to_config_type
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.launcher import LaunchRunContext
from dagster._core.test_utils import create_run_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.executor import _K8S_EXECUTOR_CONFIG_SCHEMA, K8sStepHandler
from kubernetes.client import ApiClient

from mind_assets.settings import PROJECT_DIR

DEPLOY_INSTANCE = PROJECT_DIR / "deploy" / "dagster.yaml"
IMAGE = "mind-assets:rendered"
PARTITION = MultiPartitionKey({"shard": "owm-00001", "style": "two_students"})
# A kubeconfig naming a cluster nobody contacts: dagster-k8s loads one before it builds a Job.
KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "none", "user": {"token": "unused"}}],
    "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
    "current-context": "none",
}


class RecordingBatchApi:
    """Stands in for kubernetes' BatchV1Api: keeps the Jobs it is asked to create."""

    def __init__(self) -> None:
        self.created: list[tuple[str, Any]] = []

    def create_namespaced_job(self, body: Any, namespace: str, **_: Any) -> Any:
        self.created.append((namespace, body))
        return body


def launcher_config(kubeconfig: Path) -> dict[str, Any]:
    """deploy/dagster.yaml's run launcher config, pointed at a kubeconfig instead of the
    in-cluster service account."""
    launcher = yaml.safe_load(DEPLOY_INSTANCE.read_text())["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    return {
        **launcher["config"],
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
    }


def as_manifest(job: Any) -> dict[str, Any]:
    """The Job as `kubectl get job -o json` would show it (camelCase keys)."""
    return ApiClient().sanitize_for_serialization(job)


@contextmanager
def deployed_instance(workdir: Path):
    """A throwaway instance whose run launcher is deploy/dagster.yaml's K8sRunLauncher."""
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    config = launcher_config(kubeconfig)
    overrides = {
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}
    }
    (workdir / "instance").mkdir()
    with instance_for_test(overrides=overrides, temp_dir=str(workdir / "instance")) as instance:
        yield instance, config


def conversations_run(instance, job_name: str = "__ASSET_JOB"):
    """A run of one `conversations` partition, as the UI or a backfill would create it."""
    recon_repo = ReconstructableRepository.for_module(
        "mind_assets.definitions", "defs", working_directory=str(PROJECT_DIR), container_image=IMAGE
    )
    recon_job = recon_repo.get_reconstructable_job(job_name).get_subset(
        asset_selection={AssetKey("conversations")}
    )
    run = create_run_for_test(
        instance,
        job_name=job_name,
        job_code_origin=recon_job.get_python_origin(),
        asset_selection=frozenset({AssetKey("conversations")}),
        tags={
            "dagster/partition": str(PARTITION),
            **{f"dagster/partition/{d}": k for d, k in PARTITION.keys_by_dimension.items()},
        },
    )
    return recon_job, run


def render_run_job(instance, config: dict[str, Any], run) -> dict[str, Any]:
    """The run worker's Job, as K8sRunLauncher.launch_run builds it."""
    recorder = RecordingBatchApi()
    # Through the launcher's config schema, as the instance would load it (defaults included).
    checked = process_config(resolve_to_config_type(K8sRunLauncher.config_type()), config)
    assert checked.success, checked.errors
    launcher = K8sRunLauncher(**checked.value, k8s_client_batch_api=recorder)
    launcher.register_instance(instance)
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    [(namespace, job)] = recorder.created
    return {"namespace": namespace, "job": as_manifest(job)}


def render_step_job(instance, kubeconfig: str, recon_job, run) -> dict[str, Any]:
    """The `conversations` step's Job, as the k8s_job_executor's step handler builds it."""
    job_def = recon_job.get_definition()
    executor_config = process_config(
        resolve_to_config_type(_K8S_EXECUTOR_CONFIG_SCHEMA),
        {"load_incluster_config": False, "kubeconfig_file": kubeconfig},
    )
    assert executor_config.success, executor_config.errors
    executor = k8s_job_executor.executor_creation_fn(
        InitExecutorContext(
            job=recon_job,
            executor_def=k8s_job_executor,
            executor_config=executor_config.value,
            instance=instance,
        )
    )
    plan = create_execution_plan(recon_job)
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(
            job=recon_job,
            dagster_run=run,
            instance=instance,
            execution_plan=plan,
            raise_on_error=True,
            retry_mode=RetryMode.DISABLED,
        ),
        log_manager=create_context_free_log_manager(instance, run),
        executor=executor,
        output_capture=None,
    )
    recorder = RecordingBatchApi()
    handler = K8sStepHandler(
        image=None,
        container_context=K8sContainerContext(),
        load_incluster_config=False,
        kubeconfig_file=kubeconfig,
        k8s_client_batch_api=recorder,
    )
    context = StepHandlerContext(
        instance=instance,
        plan_context=plan_context,
        steps=plan.steps,
        execute_step_args=ExecuteStepArgs(
            recon_job.get_python_origin(), run.run_id, ["conversations"]
        ),
        dagster_run=run,
    )
    list(handler.launch_step(context))
    [(namespace, job)] = recorder.created
    return {
        "namespace": namespace,
        "job": as_manifest(job),
        "executor": job_def.executor_def.name,
        "op_tags": dict(plan.get_step_by_key("conversations").tags),
    }


def render(workdir: Path) -> dict[str, Any]:
    """Both Jobs of one `conversations` partition under this process's settings."""
    from mind_assets.definitions import defs

    job_name = defs.resolve_implicit_global_asset_job_def().name
    with deployed_instance(workdir) as (instance, config):
        recon_job, run = conversations_run(instance, job_name)
        return {
            "run": render_run_job(instance, config, run),
            "step": render_step_job(instance, config["kubeconfig_file"], recon_job, run),
        }


if __name__ == "__main__":
    json.dump(render(Path(sys.argv[1])), sys.stdout)
