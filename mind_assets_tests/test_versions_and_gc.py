"""Immutable output versions, `mind gc`, and the faults a data root must survive: a killed
write, a full disk, a truncated upstream file, two writers of one partition."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import materialize

from mind_assets.blends.gc import collect, find_garbage, parse_duration
from mind_assets.cli import main as mind_cli
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.shard_specs import make_shard_spec
from mind_assets.lib.storage import (
    VERSIONS_DIRNAME,
    asset_path,
    current_version,
    read_output,
    versions_dir,
    write_parquet_version,
)
from mind_assets.llm.resource import LLMResource
from mind_assets_tests.conftest import NAPKIN


def table(n: int, tag: str = "v") -> pa.Table:
    return pa.table(
        {"id": [f"{tag}{i}" for i in range(n)], "text": [f"{tag} row {i}" * 5 for i in range(n)]}
    )


def versions(pointer: Path) -> list[Path]:
    return sorted(versions_dir(pointer).iterdir())


def make_old(path: Path, hours: float = 2) -> None:
    then = time.time() - hours * 3600
    os.utime(path, (then, then), follow_symlinks=False)


def test_a_new_version_moves_the_pointer_and_keeps_the_old_one(tmp_path):
    pointer = tmp_path / "conversations" / "napkin" / "debate.parquet"
    pointer.parent.mkdir(parents=True)
    write_parquet_version(table(3, "a"), pointer)
    first = current_version(pointer)
    write_parquet_version(table(5, "b"), pointer)
    second = current_version(pointer)
    assert pointer.is_symlink() and not os.readlink(pointer).startswith("/")
    assert first != second and versions(pointer) == sorted([first, second])
    assert pq.read_table(first)["id"][0].as_py() == "a0"
    assert pq.read_table(pointer).num_rows == 5
    # Nothing temporary stays behind, beside the pointer or among the versions.
    assert sorted(p.name for p in pointer.parent.iterdir()) == sorted(
        ["debate.parquet", VERSIONS_DIRNAME]
    )
    assert all(not p.name.startswith(".") for p in versions(pointer))


def test_a_plain_file_from_before_versions_is_kept_as_a_version(tmp_path):
    pointer = tmp_path / "chunks" / "napkin.parquet"
    pointer.parent.mkdir(parents=True)
    pq.write_table(table(2, "old"), pointer)
    write_parquet_version(table(4, "new"), pointer)
    kept = [v for v in versions(pointer) if v != current_version(pointer)]
    assert len(kept) == 1 and pq.read_table(kept[0])["id"][0].as_py() == "old0"


def _killed_write(pointer: str) -> None:
    """Starts a version, writes half of it, and dies by SIGKILL, as an OOM kill would."""
    import signal

    import mind_assets.lib.storage as storage

    def half_then_die(data, where, **kwargs):
        Path(where).write_bytes(b"PAR1" + b"\0" * 4096)
        os.kill(os.getpid(), signal.SIGKILL)

    storage.pq.write_table = half_then_die
    storage.write_parquet_version(table(50, "killed"), Path(pointer))


def test_sigkill_mid_write_leaves_the_previous_version_current_and_gc_cleans_up(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MIND_DATA_DIR", str(tmp_path))
    pointer = tmp_path / "raw_documents" / "napkin.parquet"
    pointer.parent.mkdir(parents=True)
    write_parquet_version(table(3, "good"), pointer)
    process = multiprocessing.get_context("spawn").Process(
        target=_killed_write, args=(str(pointer),)
    )
    process.start()
    process.join(60)
    assert process.exitcode == -9
    assert pq.read_table(pointer)["id"].to_pylist() == ["good0", "good1", "good2"]
    leftovers = [p for p in versions_dir(pointer).iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".tmp")
    # Too young for the default age floor: a write may still be in flight.
    assert find_garbage(tmp_path, parse_duration("1h")) == []
    make_old(leftovers[0])
    assert mind_cli(["gc"]) == 0
    assert "temp file" in capsys.readouterr().out and leftovers[0].exists()
    assert mind_cli(["gc", "--apply"]) == 0
    assert not leftovers[0].exists()
    write_parquet_version(table(4, "rerun"), pointer)
    assert pq.read_table(pointer).num_rows == 4


def test_gc_keeps_what_a_manifest_pins_and_collects_it_once_the_blend_is_gone(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("MIND_DATA_DIR", str(tmp_path))
    pointer = tmp_path / "filtered_conversations" / "napkin" / "debate.parquet"
    pointer.parent.mkdir(parents=True)
    write_parquet_version(table(3, "pinned"), pointer)
    pinned = current_version(pointer)
    upstream = tmp_path / "chunks" / "napkin.parquet"
    upstream.parent.mkdir(parents=True)
    write_parquet_version(table(2, "chunk"), upstream)
    pinned_chunk = current_version(upstream)
    manifest = {
        "blend": "mix",
        "spec_path": "mix.yaml",
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
                        "asset": "filtered_conversations",
                        "quality_tier": "high",
                        "target_share": 1.0,
                        "max_epochs": 1,
                        "lineage": [],
                        "files": [
                            {
                                "asset": "filtered_conversations",
                                "partition": "napkin|debate",
                                "path": str(pinned.relative_to(tmp_path)),
                                "sha256": "x",
                                "rows": 3,
                                "tokens": 3,
                            }
                        ],
                    }
                ],
            }
        ],
        "pinned": [
            {
                "asset": "chunks",
                "partition": "napkin",
                "data_version": "d",
                "path": str(pinned_chunk.relative_to(tmp_path)),
            }
        ],
    }
    (tmp_path / "blend_manifest" / "mix").mkdir(parents=True)
    (tmp_path / "blend_manifest" / "mix" / "manifest.json").write_text(json.dumps(manifest))
    write_parquet_version(table(4, "regenerated"), pointer)
    write_parquet_version(table(3, "rechunked"), upstream)
    metrics_file = tmp_path / "metrics" / "chunks" / "napkin.parquet"
    metrics_file.parent.mkdir(parents=True)
    write_parquet_version(table(1, "m1"), metrics_file)
    write_parquet_version(table(1, "m2"), metrics_file)
    old_metrics = [v for v in versions(metrics_file) if v != current_version(metrics_file)]
    for path in tmp_path.rglob("*"):
        make_old(path)

    garbage = {g.path for g in collect(tmp_path, 0, apply=True)}
    assert garbage == set(old_metrics)  # the pinned versions and every current one stay
    assert pinned.exists() and pinned_chunk.exists()
    assert pq.read_table(pointer)["id"][0].as_py() == "regenerated0"

    shutil.rmtree(tmp_path / "blend_manifest" / "mix")  # the blend is deleted
    capsys.readouterr()
    assert mind_cli(["gc", "--older-than", "0"]) == 0
    listed = capsys.readouterr().out
    assert "would delete (dry run; --apply deletes): 2 item(s)" in listed and pinned.exists()
    assert mind_cli(["gc", "--older-than", "0", "--apply"]) == 0
    assert not pinned.exists() and not pinned_chunk.exists()
    assert pq.read_table(pointer).num_rows == 4 and pq.read_table(upstream).num_rows == 3


def test_durations_are_parsed_and_bad_ones_named():
    assert parse_duration("30d") == 30 * 86400 and parse_duration("0") == 0
    assert parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    with pytest.raises(ValueError, match="invalid duration 'soon'"):
        parse_duration("soon")


def _write_many(pointer: str, tag: str) -> None:
    for _ in range(20):
        write_parquet_version(table(7 if tag == "a" else 9, tag), Path(pointer))


def test_two_writers_of_one_partition_leave_one_whole_version_current(tmp_path):
    pointer = tmp_path / "chunks" / "napkin.parquet"
    pointer.parent.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_many, args=(str(pointer), t)) for t in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    current = pq.read_table(pointer)
    assert (current.num_rows, current["id"][0].as_py()) in {(7, "a0"), (9, "b0")}
    # Every version is whole (each reads back completely), and none is half-written.
    assert all(pq.read_table(v).num_rows in (7, 9) for v in versions(pointer))
    assert not [p for p in pointer.parent.rglob(".*") if p.name != VERSIONS_DIRNAME]


def _can_mount_tmpfs(target: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(target)], capture_output=True
    )
    return done.returncode == 0


def test_a_full_disk_fails_the_write_cleanly_and_keeps_the_previous_version(tmp_path):
    disk = tmp_path / "small-disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("needs root and mount to make a small tmpfs")
    try:
        pointer = disk / "chunks" / "napkin.parquet"
        pointer.parent.mkdir(parents=True)
        write_parquet_version(table(3, "fits"), pointer)
        big = pa.table(
            {
                "id": [str(i) for i in range(20_000)],
                "text": [os.urandom(64).hex() for _ in range(20_000)],
            }
        )
        with pytest.raises(OSError):
            write_parquet_version(big, pointer)
        assert pq.read_table(pointer)["id"].to_pylist() == ["fits0", "fits1", "fits2"]
        assert len(versions(pointer)) == 1
        assert not [p for p in disk.rglob(".*") if p.name != VERSIONS_DIRNAME]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_truncated_upstream_file_is_named_and_nothing_is_written_downstream(
    tmp_path, settings, register, instance
):
    spec = make_shard_spec("trunc", [str(NAPKIN)], rows="0:2")
    register(spec)
    llm = LLMResource.from_settings(settings)
    assert materialize(
        [raw_documents], partition_key="trunc", instance=instance, resources={"llm": llm}
    ).success
    pointer = asset_path(settings.data_dir, "raw_documents", "trunc")
    version = current_version(pointer)
    data = version.read_bytes()
    version.chmod(0o644)
    version.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=rf"{pointer} \(version {version.name}\) is not a readable parquet"
    ):
        read_output(pointer)
    result = materialize(
        [raw_documents, chunks],
        selection=[chunks],
        partition_key="trunc",
        instance=instance,
        resources={"llm": LLMResource.from_settings(settings)},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert (
        f"{pointer} (version {version.name}) is not a readable parquet file"
        in failure.step_failure_data.error.to_string()
    )
    assert not asset_path(settings.data_dir, "chunks", "trunc").exists()
