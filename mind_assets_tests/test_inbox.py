"""The corpus inbox under a flood: bounded ticks, a small cursor, a ledger in the instance.

Real files in a tmp inbox and a real Dagster instance; the sensor is evaluated as the daemon
would, handing each tick the cursor the previous one returned.
"""

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from dagster import build_sensor_context

from mind_assets.corpus import inbox as inbox_module
from mind_assets.corpus.inbox import InboxFile, inspect_file
from mind_assets.corpus.inbox_ledger import InboxLedger
from mind_assets.corpus.sensors import INBOX_RUN_TAG, corpus_inbox_sensor
from mind_assets.settings import PROJECT_DIR
from mind_assets_tests.conftest import NAPKIN

SECONDS = 1_000_000_000


@pytest.fixture
def inbox(settings, monkeypatch) -> Path:
    monkeypatch.setenv("MIND_INBOX_MAX_FILES_PER_TICK", "3")
    settings.inbox.mkdir(parents=True)
    return settings.inbox


def napkin_rows(count: int) -> list[dict]:
    with NAPKIN.open() as handle:
        return [json.loads(next(handle)) for _ in range(count)]


def drop(inbox: Path, name: str, rows: list[dict], mtime_s: int) -> Path:
    """Write a corpus file with a chosen mtime, so the order files arrived in is explicit."""
    path = inbox / name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.utime(path, ns=(mtime_s * SECONDS, mtime_s * SECONDS))
    return path


def tick(instance, cursor):
    result = corpus_inbox_sensor(build_sensor_context(instance=instance, cursor=cursor))
    return result, [(r.partition_key, r.run_key) for r in result.run_requests]


def test_a_tick_stops_at_the_limit_and_the_next_continues_where_it_stopped(
    settings, instance, inbox
):
    rows = napkin_rows(2)
    for i in range(8):
        drop(inbox, f"part-{i}.{'parquet' if i % 2 else 'jsonl'}", rows, mtime_s=1_000 + i)

    first, requested = tick(instance, None)
    assert [shard for shard, _ in requested] == ["part-0", "part-1", "part-2"]  # oldest first
    assert json.loads(first.cursor)["remaining"] == 5
    # Between ticks: a registered file is rewritten (a new version, due again) and a waiting one
    # is rewritten (still due once, as its latest version).
    drop(inbox, "part-0.jsonl", napkin_rows(3), mtime_s=2_000)
    drop(inbox, "part-6.jsonl", napkin_rows(3), mtime_s=2_001)

    cursor, ticks = first.cursor, [requested]
    for _ in range(5):
        result, requested = tick(instance, cursor)
        cursor = result.cursor
        if not requested:
            break
        ticks.append(requested)
    assert not requested, "the inbox drains and the last tick requests nothing"

    assert [len(t) for t in ticks] == [3, 3, 3]
    assert [shard for shard, _ in ticks[1]] == ["part-3", "part-4", "part-5"]
    assert [shard for shard, _ in ticks[2]] == ["part-7", "part-0", "part-6"]
    run_keys = [key for t in ticks for _, key in t]
    assert len(run_keys) == len(set(run_keys)), "no file version is requested twice"
    assert sorted({shard for t in ticks for shard, _ in t}) == [f"part-{i}" for i in range(8)]
    size_of = {p.name: p.stat().st_size for p in inbox.iterdir()}
    assert f"inbox:part-6.jsonl:{size_of['part-6.jsonl']}:{2_001 * SECONDS}" in run_keys
    assert sorted(instance.get_dynamic_partitions("shards")) == [f"part-{i}" for i in range(8)]
    assert len(list((settings.data_dir / "shard_specs").glob("*.json"))) == 8
    assert len(cursor) < 100


def test_a_flood_drains_in_bounded_ticks_with_one_request_per_file(
    settings, instance, inbox, tmp_path, monkeypatch
):
    monkeypatch.setenv("MIND_INBOX_MAX_FILES_PER_TICK", "25")
    rows = napkin_rows(1)
    templates = {
        suffix: drop(tmp_path, f"template{suffix}", rows, mtime_s=1).read_bytes()
        for suffix in (".parquet", ".jsonl")
    }
    names = [f"owm-{i:04d}" for i in range(300)]
    for i, name in enumerate(names):  # dropped at once, as a copy of a corpus arrives
        suffix = ".parquet" if i % 2 else ".jsonl"
        (inbox / f"{name}{suffix}").write_bytes(templates[suffix])

    cursor, per_tick, requested = None, [], []
    while len(per_tick) <= len(names):  # a bound, should the inbox never drain
        result, ticked = tick(instance, cursor)
        cursor = result.cursor
        assert len(cursor) < 100, "the cursor does not grow with the files seen"
        if not ticked:
            break
        per_tick.append(len(ticked))
        requested += ticked
    assert per_tick == [25] * 12, "every tick stops at the limit, none repeats or skips"
    assert json.loads(cursor)["remaining"] == 0
    assert sorted(shard for shard, _ in requested) == names, "each file requested exactly once"
    assert sorted(instance.get_dynamic_partitions("shards")) == names


def test_a_tick_that_was_not_accepted_is_repeated_under_the_same_run_keys(instance, inbox):
    rows = napkin_rows(1)
    for i in range(5):
        drop(inbox, f"doc-{i}.jsonl", rows, mtime_s=1_000 + i)
    _, lost = tick(instance, None)  # say the daemon timed out: its cursor is never stored
    again, requested = tick(instance, None)
    assert requested == lost, "the same files, under the same run keys (Dagster drops repeats)"
    _, following = tick(instance, again.cursor)
    assert [shard for shard, _ in following] == ["doc-3", "doc-4"]


def test_seen_files_live_in_the_instance_not_the_cursor(instance, inbox):
    rows = napkin_rows(1)
    for i in range(4):
        drop(inbox, f"doc-{i}.jsonl", rows, mtime_s=1_000 + i)
    first, _ = tick(instance, None)
    second, _ = tick(instance, first.cursor)
    third, requested = tick(instance, second.cursor)
    assert not requested and len(third.cursor) < 100
    # A restart, or a cursor cleared in the UI: nothing already registered is requested again.
    _, requested = tick(instance, None)
    assert not requested
    assert InboxLedger(instance).seen(["doc-0.jsonl", "gone.jsonl"]).keys() == {"doc-0.jsonl"}


def test_an_old_style_cursor_is_moved_into_the_ledger(instance, inbox):
    rows = napkin_rows(1)
    old = drop(inbox, "old.jsonl", rows, mtime_s=1_000)
    drop(inbox, "new.jsonl", rows, mtime_s=1_001)
    stat = old.stat()
    legacy = json.dumps({"old.jsonl": f"old.jsonl:{stat.st_size}:{stat.st_mtime_ns}"})
    result, requested = tick(instance, legacy)
    assert [shard for shard, _ in requested] == ["new"]
    assert json.loads(result.cursor)["version"] == 2


def test_requests_carry_the_tag_the_run_queue_limits(instance, inbox):
    drop(inbox, "napkin-new.jsonl", napkin_rows(2), mtime_s=1_000)
    result, requested = tick(instance, None)
    assert [shard for shard, _ in requested] == ["napkin-new"]
    assert result.run_requests[0].tags[INBOX_RUN_TAG] == "napkin-new.jsonl"
    for config in (PROJECT_DIR / "dagster.yaml", PROJECT_DIR / "deploy" / "dagster.yaml"):
        limits = yaml.safe_load(config.read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
        assert any(limit["key"] == INBOX_RUN_TAG for limit in limits), config


def test_ledger_upserts_new_and_known_files_together(instance):
    ledger = InboxLedger(instance)
    ledger.mark_seen({"a.jsonl": "a.jsonl:1:1"})
    many = {f"f{i}.jsonl": f"f{i}.jsonl:1:1" for i in range(1_000)}  # more than one query's worth
    ledger.mark_seen({"a.jsonl": "a.jsonl:2:2", **many})
    seen = ledger.seen(["a.jsonl", *many])
    assert seen["a.jsonl"] == "a.jsonl:2:2" and len(seen) == 1_001


def test_a_long_first_line_is_not_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(inbox_module, "FIRST_LINE_BYTES", 64)
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"text": "x" * 1_000}) + "\n")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\x00" * 1_000)

    def check(path: Path):
        stat = path.stat()
        return inspect_file(InboxFile(path.parent, path.name, stat.st_size, stat.st_mtime_ns))

    assert check(long).spec is not None
    assert "not a usable corpus file" in check(binary).problem
