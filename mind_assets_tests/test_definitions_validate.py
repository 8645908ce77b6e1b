"""`dagster definitions validate` (what this Dagster version ships; `dg check defs` needs
dagster-dg-cli, which is not installed) loads the code location under both instances: the local
`dagster.yaml` and `deploy/dagster.yaml` on a real PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from mind_assets.settings import PROJECT_DIR
from mind_assets_tests.test_postgres_instance import postgres_url  # noqa: F401  (fixture)

DAGSTER = Path(sys.executable).with_name("dagster")


def validate(dagster_home: Path, environment: dict[str, str]) -> subprocess.CompletedProcess:
    base = {n: v for n, v in os.environ.items() if not n.startswith(("MIND_", "DAGSTER_"))}
    return subprocess.run(
        [str(DAGSTER), "definitions", "validate", "-w", str(PROJECT_DIR / "workspace.yaml")],
        cwd=PROJECT_DIR,
        env={
            **base,
            "DAGSTER_HOME": str(dagster_home),
            "PYTHONPATH": str(PROJECT_DIR),
            **environment,
        },
        capture_output=True,
        text=True,
    )


def test_local_instance_loads_the_definitions(tmp_path):
    storage = tmp_path / "data" / "dagster"
    storage.mkdir(parents=True)
    done = validate(
        PROJECT_DIR,
        {"MIND_DATA_DIR": str(tmp_path / "data"), "MIND_DAGSTER_STORAGE_DIR": str(storage)},
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "All code locations passed validation" in done.stdout + done.stderr


def test_deploy_instance_loads_the_definitions_in_offline_gpu_mode(tmp_path, request):
    """deploy/dagster.yaml as written, except the port of the throwaway server; the code
    location loads under the offline-gpu ConfigMap, which selects dagster-k8s's executor."""
    server = urlsplit(request.getfixturevalue("postgres_url"))
    deployed = (PROJECT_DIR / "deploy" / "dagster.yaml").read_text()
    assert deployed.count("port: 5432\n") == 1
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(deployed.replace("port: 5432\n", f"port: {server.port}\n"))
    configmap = yaml.safe_load((PROJECT_DIR / "deploy" / "modes" / "offline-gpu.yaml").read_text())
    done = validate(
        home,
        {
            **{name: str(value) for name, value in configmap["data"].items()},
            "MIND_DATA_DIR": str(tmp_path / "data"),
            "DAGSTER_PG_HOST": server.hostname,
            "DAGSTER_PG_DB": server.path.lstrip("/"),
            "DAGSTER_PG_USER": server.username,
            "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
        },
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "All code locations passed validation" in done.stdout + done.stderr
