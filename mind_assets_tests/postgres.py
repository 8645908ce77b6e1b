"""A throwaway PostgreSQL server of Debian's binaries on 127.0.0.1, for the tests that run the
Dagster instance on dagster-postgres and for the scale benchmark."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class PostgresMissing(RuntimeError):
    pass


def as_postgres_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root, developers usually do not.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def throwaway_postgres(prefix: str = "mind-pg-") -> Iterator[str]:
    """Start a server in a temporary directory with an empty `dagster` database; yield its
    SQLAlchemy URL; stop the server and remove the directory afterwards."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    initdb = shutil.which("initdb") or (bins and str(bins[-1] / "initdb"))
    if not initdb:
        raise PostgresMissing(
            "PostgreSQL is not installed: `.ci/run` installs the Debian package postgresql"
        )
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    # Not under pytest's tmp_path: that is private to the test user, and the server runs as
    # the postgres user when the tests run as root.
    root = Path(tempfile.mkdtemp(prefix=prefix))
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
    start = [pg_ctl, "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"]
    subprocess.run(as_postgres_user(start), check=True, capture_output=True)
    try:
        create = ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "mind", "-d", "postgres"]
        subprocess.run([*create, "-c", "CREATE DATABASE dagster"], check=True, capture_output=True)
        # dagster-postgres speaks psycopg2; SQLAlchemy 2.1 would pick psycopg 3 for "postgresql://".
        yield f"postgresql+psycopg2://mind@127.0.0.1:{port}/dagster"
    finally:
        stop = [pg_ctl, "-D", str(data), "-m", "fast", "stop"]
        subprocess.run(as_postgres_user(stop), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
