"""A throwaway S3-compatible server (moto's standalone server) on 127.0.0.1, for the tests of an
object-store data root (`MIND_DATA_DIR=s3://...`)."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "mind-data"


@dataclass(frozen=True)
class LocalS3:
    endpoint: str
    bucket: str

    @property
    def options(self) -> dict:
        """fsspec storage options reaching this server (MIND_DATA_STORE_OPTIONS)."""
        return {"client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(key="testing", secret="testing", **self.options)

    def client(self):
        """A boto3 client of this server (for what fsspec does not expose: multipart uploads)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def object_keys(self) -> list[str]:
        """Every object in the bucket, listed afresh."""
        fs = self.filesystem()
        fs.invalidate_cache()
        return sorted(fs.find(self.bucket))

    def fresh_working_copies(self, url: str, root: Path, monkeypatch: pytest.MonkeyPatch):
        """A function that points the settings at the store `url` with a new, empty working copy
        under `root` (as a fresh pod has) and returns those settings."""
        from mind_assets.settings import get_settings

        numbers = itertools.count()

        def fresh():
            working_copy = root / f"working-copy-{next(numbers)}"
            environment = {
                "MIND_DATA_DIR": url,
                "MIND_DATA_CACHE_DIR": str(working_copy),
                "MIND_DATA_STORE_OPTIONS": json.dumps(self.options),
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
            for name, value in environment.items():
                monkeypatch.setenv(name, value)
            settings = get_settings()
            assert settings.data_store_url == url.rstrip("/") and not working_copy.exists()
            return settings

        return fresh


@contextlib.contextmanager
def local_s3() -> Iterator[LocalS3]:
    """Start moto's server on a free port with one empty bucket; stop it afterwards."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        pytest.fail("moto_server is missing: `make test` installs the dev extra (moto[s3])")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {endpoint}") from None
                time.sleep(0.2)
        chosen = LocalS3(endpoint, BUCKET)
        chosen.client().create_bucket(Bucket=BUCKET)
        yield chosen
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
