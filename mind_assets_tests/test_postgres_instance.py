"""The Dagster instance on a real PostgreSQL server (dagster-postgres)."""

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from mind_assets.corpus.assets import raw_documents
from mind_assets.corpus.shards import register_shard
from mind_assets_tests.conftest import napkin_shard

POSTGRES_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


def as_postgres_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root, developers usually do not.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture
def postgres_url():
    initdb = shutil.which("initdb") or (POSTGRES_BIN and str(POSTGRES_BIN / "initdb"))
    if not initdb:
        pytest.fail("PostgreSQL is not installed: `.ci/run` installs the Debian package postgresql")
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    # Not under pytest's tmp_path: that is private to the test user, and the server runs as
    # the postgres user when the tests run as root.
    root = Path(tempfile.mkdtemp(prefix="mind-pg-"))
    data = root / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        as_postgres_user([initdb, "-D", str(data), "-A", "trust", "-U", "mind"]),
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {data}"
    subprocess.run(
        as_postgres_user(
            [pg_ctl, "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "mind",
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE dagster",
            ],
            check=True,
            capture_output=True,
        )
        # dagster-postgres speaks psycopg2; SQLAlchemy 2.1 would pick psycopg 3 for "postgresql://".
        yield f"postgresql+psycopg2://mind@127.0.0.1:{port}/dagster"
    finally:
        subprocess.run(
            as_postgres_user([pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True
        )


def test_materialize_a_partition_with_the_instance_on_postgres(settings, postgres_url, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: {postgres_url}\ntelemetry:\n  enabled: false\n"
    )
    instance = DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        register_shard(instance, settings, napkin_shard("napkin1", 1))
        result = materialize([raw_documents], partition_key="napkin1", instance=instance)
        assert result.success
        event = instance.get_latest_materialization_event(AssetKey("raw_documents"))
        assert event.run_id == result.run_id and event.asset_materialization.partition == "napkin1"
        assert instance.get_dynamic_partitions("shards") == ["napkin1"]
    finally:
        instance.dispose()
