"""Unattended operation: a file dropped into the inbox becomes a shard whose raw documents and
conversations materialize, driven by the sensor and declarative automation (Dagster's test APIs)."""

import json
from functools import partial

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, build_sensor_context, evaluate_automation_conditions

from mind_assets.conversations.styles import STYLE_KEYS
from mind_assets.corpus.sensors import corpus_inbox_sensor
from mind_assets.definitions import build_definitions
from mind_assets.lib.storage import asset_path
from mind_assets_tests.conftest import NAPKIN
from mind_assets_tests.merged_engine_calls import run_merged


def sensor_tick(instance, cursor=None):
    context = build_sensor_context(instance=instance, cursor=cursor)
    return corpus_inbox_sensor(context), context


def test_corrupt_and_vanishing_files_are_logged_and_skipped(
    settings, instance, tmp_path, monkeypatch
):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("MIND_INBOX_DIR", str(inbox))
    (inbox / "broken.parquet").write_bytes(b"not parquet at all")
    (inbox / "garbage.jsonl").write_bytes(b"\xff\xfe{not json\n")
    result, _ = sensor_tick(instance)
    assert not result.run_requests and result.skip_reason
    assert instance.get_dynamic_partitions("shards") == []
    cursor = result.cursor
    (inbox / "broken.parquet").unlink()  # vanished: the next tick must not crash either
    result, _ = sensor_tick(instance, cursor)
    assert not result.run_requests


@pytest.mark.engine
def test_inbox_file_becomes_a_shard_whose_documents_and_conversations_materialize(
    settings, instance, run, tmp_path, monkeypatch
):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("MIND_INBOX_DIR", str(inbox))
    monkeypatch.setenv("MIND_MAX_TOKENS", "16")  # what is generated is tested elsewhere
    sections = NAPKIN.open().readlines()[10:11]  # one short section: one chunk per style
    # The automation sensor is already ticking when the file arrives (as with a running daemon):
    # its first evaluation is the baseline that later updates are measured against.
    defs = build_definitions()
    cursor = evaluate_automation_conditions(defs=defs, instance=instance).cursor
    (inbox / "napkin-new.jsonl").write_text("".join(sections))

    result, _ = sensor_tick(instance)
    assert [r.partition_key for r in result.run_requests] == ["napkin-new"]
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for request in result.run_requests:
        run([AssetKey("raw_documents")], request.partition_key)
    again, _ = sensor_tick(instance, result.cursor)
    assert not again.run_requests, "a file already registered is not requested twice"

    materialized: dict[str, set[str]] = {}
    for _ in range(4):  # chunks, then conversations, then filtered, then longest
        evaluation = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = evaluation.cursor
        if not evaluation.total_requested:
            break
        for key in (
            AssetKey(a)
            for a in ("chunks", "conversations", "filtered_conversations", "longest_conversations")
        ):
            partitions = sorted(evaluation.get_requested_partitions(key))
            # Each requested partition materializes on its own; the eight conversations
            # partitions send their requests to the engine in one call.
            run_merged([partial(run, [key], p, raise_on_error=False) for p in partitions])
            materialized.setdefault(key.path[0], set()).update(partitions)
    assert materialized["chunks"] == {"napkin-new"}
    assert len(materialized["conversations"]) == len(STYLE_KEYS)  # 7 styles + rephrase
    rows = pq.read_table(
        asset_path(settings.data_dir, "conversations", "napkin-new", "debate")
    ).to_pylist()
    expected = {json.loads(line)["id"] for line in sections}
    assert rows and {r["doc_id"] for r in rows} == expected
