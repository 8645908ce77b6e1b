"""An object-store data root (`MIND_DATA_DIR=s3://...`) against moto's S3 server on 127.0.0.1:
settings, versions and pointers in the store, a fresh working copy reading what another wrote,
listing partitions, exports replacing their objects, and a write killed mid-upload."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from mind_assets.lib import object_store, storage
from mind_assets.lib.outputs import OutputFamily, PartitionDim
from mind_assets.lib.storage import (
    current_version,
    output_exists,
    read_output,
    write_parquet_version,
)
from mind_assets.settings import PROJECT_DIR, get_settings
from mind_assets_tests.s3_server import LocalS3, local_s3

URL = "s3://mind-data/root"
FAMILY = OutputFamily(
    name="widgets",
    dims=(PartitionDim("shard", "shards", dynamic="shards"),),
    schema=pa.schema([("widget_id", pa.string()), ("text", pa.string())]),
    id_column="widget_id",
    text_column="text",
)


@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3]:
    with local_s3() as server:
        yield server


@pytest.fixture
def store_env(s3, tmp_path, monkeypatch):
    """A function opening a new, empty working copy (another pod) of a fresh prefix of the
    store, returning its settings."""
    return s3.fresh_working_copies(f"{URL}-{tmp_path.name}", tmp_path, monkeypatch)


def rows(*texts: str) -> pa.Table:
    return pa.table({"widget_id": [f"w{i}" for i in range(len(texts))], "text": list(texts)})


def test_a_url_data_root_becomes_a_working_copy_of_the_store(monkeypatch, tmp_path):
    monkeypatch.setenv("MIND_DATA_DIR", "s3://bucket/some/prefix/")
    monkeypatch.setenv("MIND_DATA_CACHE_DIR", str(tmp_path / "wc"))
    settings = get_settings()
    assert settings.data_store_url == "s3://bucket/some/prefix"
    assert settings.data_dir == tmp_path / "wc"
    assert object_store.store_for(settings.data_dir / "chunks" / "a.parquet").url == (
        "s3://bucket/some/prefix"
    )
    monkeypatch.delenv("MIND_DATA_CACHE_DIR")
    default = get_settings().data_dir
    assert default.parts[-4:] == ("s3", "bucket", "some", "prefix")
    monkeypatch.setenv("MIND_DATA_DIR", f"file://{tmp_path}/local")
    local = get_settings()
    assert local.data_dir == tmp_path / "local" and local.data_store_url is None
    assert object_store.store_for(local.data_dir / "x") is None


def test_versions_and_pointer_reach_the_store_and_a_fresh_copy_reads_them(s3, store_env):
    first = store_env()
    output = FAMILY.path(first.data_dir, {"shard": "a"})
    write_parquet_version(rows("one", "two"), output)
    old_version = current_version(output).name
    keys = [k for k in s3.object_keys() if k.startswith(object_store.store_for(output).root)]
    assert any(k.endswith(f".versions/a.parquet/{old_version}") for k in keys)
    assert any(k.endswith(".versions/a.parquet/CURRENT") for k in keys)

    second = store_env()  # another process, nothing on its disk
    fresh = FAMILY.path(second.data_dir, {"shard": "a"})
    assert not fresh.exists()
    assert read_output(fresh)["text"].to_pylist() == ["one", "two"]
    assert fresh.is_symlink() and current_version(fresh).name == old_version
    assert FAMILY.materialized(second.data_dir) == [{"shard": "a"}]

    # The first process writes a new version; the second reads it on its next read, and the
    # old version stays in the store for whatever manifest pinned it.
    write_parquet_version(rows("three"), output)
    assert read_output(fresh)["text"].to_pylist() == ["three"]
    assert current_version(fresh).name != old_version
    assert any(k.endswith(f".versions/a.parquet/{old_version}") for k in s3.object_keys())


def test_plain_files_and_exports_replace_their_objects(s3, store_env):
    settings = store_env()
    export = settings.data_dir / "blend_exports" / "b"
    (export / "phase1").mkdir(parents=True)
    (export / "phase1" / "part-0.parquet").write_bytes(b"0")
    (export / "phase1" / "part-1.parquet").write_bytes(b"1")
    (export / "megatron").mkdir()
    (export / "megatron" / "x.bin").write_bytes(b"m")
    (export / "summary.json").write_text("{}")
    store = object_store.store_for(export)
    store.push_tree(export)
    assert [p.relative_to(export).as_posix() for p in store.list_files(export)] == [
        "megatron/x.bin",
        "phase1/part-0.parquet",
        "phase1/part-1.parquet",
        "summary.json",
    ]
    # A later export with one shard, no Megatron folder on this disk, a new top-level file.
    shutil.rmtree(export)
    (export / "phase1").mkdir(parents=True)
    (export / "phase1" / "part-0.parquet").write_bytes(b"new")
    (export / "export.json").write_text("{}")
    store.push_tree(export)
    assert [p.relative_to(export).as_posix() for p in store.list_files(export)] == [
        "export.json",
        "megatron/x.bin",  # not written by this export: left, as on a disk
        "phase1/part-0.parquet",
    ]
    other = store_env()
    copy = other.data_dir / "blend_exports" / "b" / "phase1" / "part-0.parquet"
    assert output_exists(copy)  # the gateway pulls it into the fresh working copy
    assert copy.read_bytes() == b"new"


# Runs in its own process: writes a version of 12 MiB of random bytes (a multipart upload in
# parts of 5 MiB) and kills itself with SIGKILL the moment the first part is uploaded.
KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import pyarrow as pa
    import s3fs.core
    from mind_assets.lib import object_store, storage
    from mind_assets.lib.storage import write_parquet_version
    from mind_assets.settings import get_settings

    settings = get_settings()
    object_store.store_for(settings.data_dir).upload_chunk_bytes = 5 * 2**20
    original = s3fs.core.S3FileSystem._call_s3

    async def call_s3(self, method, *args, **kwargs):
        answer = await original(self, method, *args, **kwargs)
        if method == "upload_part":
            os.kill(os.getpid(), signal.SIGKILL)
        return answer

    s3fs.core.S3FileSystem._call_s3 = call_s3
    blob = np.random.default_rng(0).bytes(12 * 2**20)
    table = pa.table({"widget_id": ["big"], "blob": pa.array([blob], pa.binary())})
    write_parquet_version(table, settings.data_dir / sys.argv[1])
    """
)


def test_a_write_killed_mid_upload_leaves_no_object_and_the_old_version_current(
    s3, store_env, tmp_path
):
    settings = store_env()
    output = FAMILY.path(settings.data_dir, {"shard": "k"})
    write_parquet_version(rows("before"), output)
    store = object_store.store_for(output)
    versions_prefix = store.key(output.parent) + "/.versions/k.parquet/"
    before = [k for k in s3.object_keys() if k.startswith(versions_prefix)]
    assert len(before) == 2  # the version and CURRENT

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(output.relative_to(settings.data_dir))],
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    client = s3.client()
    # It was killed mid-write: an upload was started and never completed ...
    uploads = client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    in_bucket = versions_prefix.removeprefix(f"{s3.bucket}/")
    assert any(u["Key"].startswith(in_bucket) for u in uploads), uploads
    # ... and the store shows nothing of it: no new object, the pointer unchanged.
    assert [k for k in s3.object_keys() if k.startswith(versions_prefix)] == before
    assert read_output(FAMILY.path(store_env().data_dir, {"shard": "k"}))["text"].to_pylist() == [
        "before"
    ]


def test_a_store_without_its_filesystem_or_bucket_is_named(store_env, monkeypatch, tmp_path):
    settings = store_env()
    store = object_store.store_for(settings.data_dir)
    missing_bucket = object_store.DataStore("s3://no-such-bucket/x", tmp_path / "wc", store.options)
    path = tmp_path / "wc" / "a.json"
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    with pytest.raises(object_store.ObjectStoreError, match="s3://no-such-bucket/x"):
        missing_bucket.upload(path)
    with pytest.raises(object_store.ObjectStoreError, match="nosuchscheme://"):
        object_store.DataStore("nosuchscheme://a/b", tmp_path / "wc2")


def test_a_store_without_atomic_puts_gets_a_temporary_key_and_a_rename(tmp_path):
    """fsspec's in-memory filesystem stands for any store whose writes are not all or nothing:
    the object appears under its name only when whole, and no temporary key is left."""
    import fsspec

    store = object_store.DataStore(f"memory://{tmp_path.name}/root", tmp_path / "wc")
    output = FAMILY.path(tmp_path / "wc", {"shard": "m"})
    object_store.register(store.working_copy, store.url, {})
    write_parquet_version(rows("in memory"), output)
    memory = fsspec.filesystem("memory")
    keys = sorted(memory.find(f"/{tmp_path.name}/root"))
    names = sorted(k.rsplit("/", 1)[1] for k in keys)
    assert names == sorted([current_version(output).name, "CURRENT"])  # no temporary key left
    fresh = FAMILY.path(tmp_path / "wc2", {"shard": "m"})
    object_store.register(tmp_path / "wc2", store.url, {})
    assert read_output(fresh)["text"].to_pylist() == ["in memory"]


def test_a_version_already_in_the_store_is_never_replaced(s3, store_env):
    """A create-only upload that finds its key taken accepts the same file (uploaded before by
    this or another working copy) and refuses a different one by name, instead of looking like
    a success."""
    settings = store_env()
    output = FAMILY.path(settings.data_dir, {"shard": "v"})
    write_parquet_version(rows("pinned"), output)
    version = current_version(output)
    store = object_store.store_for(output)
    store.upload(version, create_only=True)  # the same bytes again: accepted
    impostor = version.with_name("impostor.parquet")
    impostor.write_bytes(b"other content of another size")
    impostor.replace(version)
    with pytest.raises(object_store.ObjectStoreError, match="refused to overwrite"):
        store.upload(version, create_only=True)
    fresh = FAMILY.path(store_env().data_dir, {"shard": "v"})
    assert read_output(fresh)["text"].to_pylist() == ["pinned"]


def test_two_writers_racing_on_one_pointer_leave_it_on_the_newest_version(s3, store_env):
    """Two working copies (two pods) write versions of one partition at once: the store's
    pointer ends on the newest version written, never an older one, and every version is in
    the store as it was written."""
    import threading

    copies = [store_env(), store_env()]
    for copy in copies:  # both pods' stores, in this one process
        object_store.register(copy.data_dir, copy.data_store_url, copy.data_store_options)
    written: list[Path] = []
    lock = threading.Lock()

    def writer(settings, label: str) -> None:
        output = FAMILY.path(settings.data_dir, {"shard": "race"})
        for n in range(6):
            write_parquet_version(rows(f"{label}{n}", "x" * n), output)
            with lock:
                written.append(current_version(output))

    threads = [threading.Thread(target=writer, args=(c, c.data_dir.name)) for c in copies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = object_store.store_for(copies[0].data_dir)
    pointer = storage.pointer_file(FAMILY.path(copies[0].data_dir, {"shard": "race"}))
    current = store.get_bytes(pointer).decode()
    versions = {p.name for p in written} | {p.name for c in copies for p in versions_of(c)}
    assert current == max(versions)
    for copy in copies:
        for version in versions_of(copy):  # never overwritten
            assert object_store.store_for(version).get_bytes(version) == version.read_bytes()


def versions_of(settings) -> list[Path]:
    directory = storage.versions_dir(FAMILY.path(settings.data_dir, {"shard": "race"}))
    return sorted(p for p in directory.glob("*.parquet"))


def test_a_writer_behind_the_store_never_moves_its_pointer_back(s3, store_env):
    settings = store_env()
    output = FAMILY.path(settings.data_dir, {"shard": "late"})
    write_parquet_version(rows("newer"), output)
    newer = current_version(output)
    store = object_store.store_for(output)
    older = "20000101T000000Z-0000000000000000.parquet"
    assert store.advance_pointer(storage.pointer_file(output), older) == newer.name
    assert store.get_bytes(storage.pointer_file(output)).decode() == newer.name


def test_gc_on_the_store_deletes_what_nothing_needs_and_keeps_what_a_manifest_pins(
    s3, store_env, capsys
):
    """`mind gc` in a fresh working copy lists the store: old versions no pointer or blend
    needs, temporary objects of killed uploads and request batches of unfinished generations
    go (only with --apply); current and pinned versions stay."""
    from mind_assets.blends.gc import collect
    from mind_assets.cli import main as mind_cli

    writer = store_env()
    output = FAMILY.path(writer.data_dir, {"shard": "g"})
    write_parquet_version(rows("first"), output)
    pinned = current_version(output)
    write_parquet_version(rows("second"), output)
    write_parquet_version(rows("third"), output)
    current = current_version(output)
    manifest = {
        "blend": "keepme",
        "spec_path": "keepme.yaml",
        "spec_sha256": "",
        "total_tokens": 1,
        "seed": 0,
        "tokenizer": "t",
        "created_at": "now",
        "phases": [
            {
                "name": "p",
                "budget_tokens": 1,
                "sources": [
                    {
                        "name": "s",
                        "asset": "raw_documents",
                        "quality_tier": "high",
                        "target_share": 1.0,
                        "max_epochs": 1,
                        "lineage": [],
                        "files": [
                            {
                                "asset": "raw_documents",
                                "partition": "g",
                                "path": pinned.relative_to(writer.data_dir).as_posix(),
                                "sha256": "x",
                                "rows": 1,
                                "tokens": 1,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    storage.write_json_version(manifest, storage.blend_manifest_file(writer.data_dir, "keepme"))
    batch = (
        storage.requests_dir(writer.data_dir, "conversations", "g", "debate") / "batch-1.parquet"
    )
    storage.write_parquet_atomic(rows("unfinished"), batch)
    store = object_store.store_for(output)
    temp = writer.data_dir / "widgets" / ".g.parquet.killed.tmp"
    temp.write_bytes(b"half")
    store.upload(temp)

    fresh = store_env()  # another pod, nothing on its disk
    listed = {
        (g.kind, g.path.relative_to(fresh.data_dir).as_posix())
        for g in collect(fresh.data_dir, 0, apply=False)
    }
    second = [v for v in versions_of_output(fresh, "g") if v not in (pinned.name, current.name)]
    assert listed == {
        ("stored version", f"widgets/.versions/g.parquet/{second[0]}"),
        ("stored temp file", "widgets/.g.parquet.killed.tmp"),
        ("stored request batch", "_requests/conversations/g/debate/batch-1.parquet"),
    }
    assert mind_cli(["gc", "--older-than", "0"]) == 0  # a dry run deletes nothing
    assert len(versions_of_output(fresh, "g")) == 3
    collect(fresh.data_dir, 0, apply=True)
    assert versions_of_output(fresh, "g") == sorted([pinned.name, current.name])
    keys = s3.object_keys()
    assert not [k for k in keys if k.endswith(".tmp") or "/_requests/" in k]
    assert read_output(FAMILY.path(store_env().data_dir, {"shard": "g"}))["text"].to_pylist() == [
        "third"
    ]


def versions_of_output(settings, shard: str) -> list[str]:
    """The versions of a partition in the store, as the working copy `settings` sees it."""
    directory = storage.versions_dir(FAMILY.path(settings.data_dir, {"shard": shard}))
    store = object_store.store_for(directory)
    return sorted(p.name for p in store.list_files(directory) if p.name != "CURRENT")


def test_the_metric_partitions_reach_the_store_and_metrics_duckdb_stays_local(s3, store_env):
    from mind_assets.metrics.store import metrics_store

    settings = store_env()
    metrics = metrics_store(settings.data_dir)
    metrics.record_aggregates("conversations", "s|debate", {"accepted": 3.0})
    metrics.rebuild_cache()
    assert metrics.cache_path.is_file()
    keys = s3.object_keys()
    assert any("/metrics/partition_aggregates/" in k for k in keys)
    assert not [k for k in keys if k.endswith("metrics.duckdb")]
    # Another pod reads the metrics the first wrote, from the store.
    rows = metrics_store(store_env().data_dir).query("SELECT * FROM partition_aggregates")
    assert rows.to_pylist()[0]["value"] == 3.0
