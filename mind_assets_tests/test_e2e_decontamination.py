"""Benchmark decontamination through Dagster on real text: napkin sections with GSM8K test
problems planted in them (verbatim, re-spaced in LaTeX, and inside a longer page).

Without the engine: benchmark_index, the raw pages it quarantines, a split that cannot be read
failing the step by name, and a new benchmark list marking exactly the checked partitions
unsynced. With the real embedded engine: the conversations written from the planted pages
quarantined with the benchmark and item named, clean rows passing, the blend's audit and dataset
card listing the removals, and the blend refusing sources never checked against a new list."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import MultiPartitionKey

from mind_assets.blends.assets import (
    blend_manifest,
    blend_tokenizer,
    instance_lookup,
    load_manifest,
)
from mind_assets.blends.lineage import format_audit, trace_asset_row
from mind_assets.conversations.assets import conversations, mind_prompts
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.shard_specs import make_shard_spec
from mind_assets.decontamination.assets import benchmark_index, decontamination_config
from mind_assets.decontamination.normalise import normalise
from mind_assets.decontamination.record import read_record
from mind_assets.definitions import defs as GRAPH_DEFS
from mind_assets.filtering.assets import filtered_conversations, longest_conversations
from mind_assets.lib.storage import asset_path
from mind_assets.lib.tokenizer import token_counter
from mind_assets.lib.versions import UnsyncedStatus
from mind_assets.llm.resource import LLMResource
from mind_assets.metrics.store import metrics_store
from mind_assets.publish.dataset import Publishing, publish_blend
from mind_assets.settings import get_settings
from mind_assets_tests.conftest import GSM8K_TEST, NAPKIN

SHARD = "planted"
PAGES = ("clean", "verbatim", "respaced", "inside")  # the corpus file's rows, in order
STYLE = "two_students"
# GSM8K test 0 reworded: its numbers kept, its sentences rewritten, one run of 12 words left.
REWORDED_GSM8K_0 = (
    "Every day, Janet's ducks give her 16 eggs. Three are her breakfast and four go into muffins "
    "she bakes for friends. What is left she sells at the farmers' market daily for $2 per fresh "
    "duck egg. How many dollars a day does that bring in?"
)
GSM8K_SPEC = {"name": "gsm8k", "dataset_path": "openai/gsm8k", "dataset_name": "main"}


def gsm8k_test(index: int) -> str:
    with GSM8K_TEST.open() as lines:
        for i, line in enumerate(lines):
            if i == index:
                return json.loads(line)["question"]
    raise IndexError(index)


def number(item_id: str) -> int:
    """`gsm8k:test:3` -> 3."""
    return int(item_id.rsplit(":", 1)[1])


def respaced_latex(question: str) -> str:
    """GSM8K test 2 as a LaTeX page writes it: numbers in math mode, `{,}` thousands, `\\%`,
    doubled spaces and a line break in mid-sentence."""
    assert question.startswith("Josh decides to try flipping a house.")
    return (
        "Josh decides  to try flipping a house.\nHe buys a house for $\\$80{,}000$ and then "
        "puts in $\\$50{,}000$ in   repairs. This increased the value of the house by "
        "$150\\%$.  How much profit did he make?"
    )


def planted_corpus(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Four pages: a clean napkin section, GSM8K test 0 verbatim, GSM8K test 2 re-spaced in
    LaTeX, and GSM8K test 3 in the middle of a longer napkin section. Returns the corpus file
    and the GSM8K item each planted page holds."""
    sections = [json.loads(line) for line in NAPKIN.open()][:2]
    middle = sections[1]["text"].split("\n\n")
    half = len(middle) // 2
    longer = "\n\n".join([*middle[:half], f"Exercise. {gsm8k_test(3)}", *middle[half:]])
    pages = [
        ("clean", sections[0]["title"], sections[0]["text"]),
        ("verbatim", "Practice problem", gsm8k_test(0)),
        ("respaced", "A word problem, typeset", respaced_latex(gsm8k_test(2))),
        ("inside", sections[1]["title"], longer),
    ]
    path = tmp_path / "planted.jsonl"
    path.write_text(
        "".join(json.dumps({"id": i, "title": t, "text": x}) + "\n" for i, t, x in pages)
    )
    return path, {"verbatim": "gsm8k:test:0", "respaced": "gsm8k:test:2", "inside": "gsm8k:test:3"}


def documents_by_page(settings) -> tuple[dict[str, dict], dict[str, dict]]:
    """(accepted, quarantined) raw documents of the shard, by the page id given in the corpus."""
    accepted = pq.read_table(asset_path(settings.data_dir, "raw_documents", SHARD)).to_pylist()
    quarantined = pq.read_table(
        asset_path(settings.data_dir, "raw_documents", SHARD, suffix=".quarantine.parquet")
    ).to_pylist()
    page = {r["doc_id"]: r["source"] for r in accepted + quarantined}
    assert len(page) == 4

    def page_of(row):
        return PAGES[int(page[row["doc_id"]].rsplit("#", 1)[1])]

    return {page_of(r): r for r in accepted}, {page_of(r): r for r in quarantined}


def unsynced(instance) -> dict[str, tuple[str, ...]]:
    status = UnsyncedStatus.of_repository(instance, GRAPH_DEFS.get_repository_def())
    found = {}
    for key in (
        "benchmark_index",
        "raw_documents",
        "chunks",
        "conversations",
        "filtered_conversations",
        "longest_conversations",
    ):
        for partition in status.materialized_partitions(key) or [None]:
            item = status.unsynced(key, partition)
            if item is not None:
                found[f"{key}[{partition}]" if partition else key] = item.causes
    return found


def test_raw_pages_with_planted_problems_are_quarantined_and_a_new_list_marks_them_unsynced(
    settings, run, register, instance, mirror, monkeypatch, tmp_path
):
    corpus, planted = planted_corpus(tmp_path)
    monkeypatch.setenv("MIND_TASK_MIRROR_DIR", str(mirror))
    monkeypatch.setenv("MIND_DECONTAMINATION__BENCHMARKS", json.dumps([GSM8K_SPEC]))
    register(make_shard_spec(SHARD, [str(corpus)]))
    assert run([decontamination_config]).success
    [event] = run([benchmark_index]).asset_materializations_for_node("benchmark_index")
    assert event.metadata["items"].value == 1319
    version = event.metadata["index_version"].value
    assert run([raw_documents], SHARD).success

    accepted, quarantined = documents_by_page(get_settings())
    assert sorted(accepted) == ["clean"] and sorted(quarantined) == sorted(planted)
    for page, item in planted.items():
        [match] = quarantined[page]["contamination"]
        assert (match["benchmark"], match["item_id"]) == ("gsm8k", item)
        # The matched words (the first SPAN_WORDS of them, then "...").
        assert match["span"].removesuffix(" ...") in normalise(gsm8k_test(number(item)))
        assert quarantined[page]["rejected_by"][0].startswith(f"contaminated: gsm8k {item}: ")
    record = read_record(pq.read_schema(asset_path(settings.data_dir, "raw_documents", SHARD)))
    assert (record.index_version, record.checked, record.removed) == (version, 4, {"gsm8k": 3})

    # Quarantined pages are still chunked; a chunk of the longer page traces to its page, found
    # in the quarantine with the reason.
    assert run([chunks], SHARD).success
    inside = quarantined["inside"]["doc_id"]
    chunk_rows = pq.read_table(asset_path(settings.data_dir, "chunks", SHARD)).to_pylist()
    assert {c["doc_id"] for c in chunk_rows} == {
        d["doc_id"] for d in [*accepted.values(), *quarantined.values()]
    }
    first = next(c for c in chunk_rows if c["doc_id"] == inside)
    ancestry = trace_asset_row("chunks", first["chunk_id"], settings.data_dir)
    assert ancestry["raw_document"]["doc_id"] == inside
    assert ancestry["raw_document"]["rejected_by"][0].startswith("contaminated: gsm8k gsm8k:test:3")
    assert unsynced(instance) == {}

    # A benchmark split that cannot be read fails the step, by name; the index is not replaced.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = {"name": "private_eval", "dataset_path": "me/private", "splits": ["test"]}
    monkeypatch.setenv("MIND_DECONTAMINATION__BENCHMARKS", json.dumps([GSM8K_SPEC, missing]))
    failed = run([benchmark_index], raise_on_error=False)
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "benchmark 'private_eval' (private_eval: me/private 'test')" in (
        failure.step_failure_data.error.to_string()
    )
    # A step that reads the index refuses the one built for the old list.
    assert not run([raw_documents], SHARD, raise_on_error=False).success

    # A new benchmark list: observing the settings marks the index unsynced; rebuilding it
    # marks the partitions checked against the old index, and nothing else.
    csqa = {
        "name": "commonsense_qa",
        "dataset_path": "tau/commonsense_qa",
        "splits": ["validation"],
    }
    monkeypatch.setenv("MIND_DECONTAMINATION__BENCHMARKS", json.dumps([GSM8K_SPEC, csqa]))
    assert run([decontamination_config]).success
    assert list(unsynced(instance)) == ["benchmark_index"]
    assert run([benchmark_index]).success
    assert unsynced(instance) == {
        f"raw_documents[{SHARD}]": ("benchmark_index has a new data version",)
    }
    # Checked again, the pages are a new version, so their chunks follow (regenerating what is
    # made from them reuses every stored generation by request hash).
    assert run([raw_documents], SHARD).success
    assert unsynced(instance) == {
        f"chunks[{SHARD}]": (f"raw_documents[{SHARD}] has a new data version",)
    }


@pytest.mark.engine
def test_planted_problems_are_quarantined_from_page_to_conversation_to_blend(
    settings, run, register, instance, mirror, monkeypatch, tmp_path
):
    corpus, planted = planted_corpus(tmp_path)
    blends = tmp_path / "blends"
    blends.mkdir()
    spec = (
        "name: example\ntotal_tokens: 600\nphases:\n  - name: phase1\n    fraction: 1.0\n"
        "    sources:\n"
        "      - {name: pages, asset: raw_documents, quality_tier: low, share: 0.4,"
        " max_epochs: 50}\n"
        "      - {name: dialogues, asset: filtered_conversations, quality_tier: medium,"
        f" share: 0.3, max_epochs: 50, selection: {{styles: [{STYLE}]}}}}\n"
        "      - {name: longest, asset: longest_conversations, quality_tier: high, share: 0.3,"
        " max_epochs: 50}\n"
    )
    (blends / "example.yaml").write_text(spec)
    monkeypatch.setenv("MIND_BLENDS_DIR", str(blends))
    monkeypatch.setenv("MIND_TASK_MIRROR_DIR", str(mirror))
    monkeypatch.setenv("MIND_DECONTAMINATION__BENCHMARKS", '["gsm8k"]')  # lm-eval's gsm8k
    # Keep the 135M model's clean conversations: the MIND paper's length and turn rules only.
    monkeypatch.setenv("MIND_FILTERS__PROFILE", "paper")
    monkeypatch.setenv("MIND_FILTERS__DISABLED_RULES", '["not_a_conversation"]')
    monkeypatch.setenv("MIND_FILTERS__MIN_SOURCE_LENGTH_RATIO", "0")
    # Conversations of 64 tokens: a reply passes `too_short` (48) at this cap exactly when it
    # does at the suite's 160, and what is checked is where each one came from, not its length.
    monkeypatch.setenv("MIND_MAX_TOKENS", "64")
    register(make_shard_spec(SHARD, [str(corpus)]))
    run([decontamination_config, mind_prompts])
    run([benchmark_index])
    run([raw_documents, chunks], SHARD)
    key = MultiPartitionKey({"shard": SHARD, "style": STYLE})
    run([conversations], key)
    run([filtered_conversations], key)
    run([longest_conversations], SHARD)
    settings = get_settings()

    # The raw pages: each planted one quarantined, naming the benchmark and the item.
    accepted, quarantined = documents_by_page(settings)
    assert sorted(accepted) == ["clean"] and sorted(quarantined) == sorted(planted)
    for page, item in planted.items():
        assert quarantined[page]["contamination"][0]["item_id"] == item

    # The conversations written from them: a conversation whose chunk holds a planted item is
    # quarantined, naming it; every other one passes the rule.
    doc_page = {d["doc_id"]: p for p, d in {**accepted, **quarantined}.items()}
    chunk_rows = pq.read_table(asset_path(settings.data_dir, "chunks", SHARD)).to_pylist()
    questions = {
        item: normalise(gsm8k_test(int(item.rsplit(":", 1)[1]))) for item in planted.values()
    }
    dirty_chunks = {}  # chunk id -> the GSM8K item its text holds
    for chunk in chunk_rows:
        item = planted.get(doc_page[chunk["doc_id"]])
        if item is not None and questions[item] in normalise(chunk["text"]):
            dirty_chunks[chunk["chunk_id"]] = item
    assert set(dirty_chunks.values()) == set(planted.values())
    assert len(chunk_rows) > len(dirty_chunks), "the longer page has chunks without the problem"
    filtered = pq.read_table(
        asset_path(settings.data_dir, "filtered_conversations", SHARD, STYLE)
    ).to_pylist()
    held = pq.read_table(
        asset_path(
            settings.data_dir, "filtered_conversations", SHARD, STYLE, suffix=".quarantine.parquet"
        )
    ).to_pylist()
    for row in held:
        if row["chunk_id"] in dirty_chunks:
            [match] = row["contamination"]
            assert (match["benchmark"], match["item_id"]) == (
                "gsm8k",
                dirty_chunks[row["chunk_id"]],
            )
            assert any(
                r.startswith(f"contaminated: gsm8k {match['item_id']}") for r in row["rejected_by"]
            )
        else:
            assert row["contamination"] is None
    assert {r["chunk_id"] for r in held} >= set(dirty_chunks)
    assert filtered, "clean conversations pass"
    assert not {r["chunk_id"] for r in filtered} & set(dirty_chunks)

    # The blend: every file records the index, the audit and the card list the removals.
    assert run([blend_manifest], "example").success
    manifest = load_manifest(settings, "example")
    version = manifest.decontamination["version"]
    assert sorted(manifest.decontamination["benchmarks"]) == ["gsm8k"]
    for phase in manifest.phases:
        for source in phase.sources:
            for f in source.files:
                assert f.decontamination["index_version"] == version
    audit = format_audit(manifest, settings.data_dir, instance_lookup(instance))
    assert f"every file checked against benchmark index {version} (gsm8k)" in audit
    removed_conversations = sum(1 for r in held if r["chunk_id"] in dirty_chunks)
    assert (
        f"removed for gsm8k: {3 + removed_conversations} rows (raw_documents[{SHARD}] 3, "
        f"filtered_conversations[{SHARD}|{STYLE}] {removed_conversations})"
    ) in audit
    llm = LLMResource.from_settings(settings)
    publishing = Publishing(
        settings.data_dir, settings.prompts_dir, lambda: token_counter(llm.model_path())
    )
    report = publish_blend(
        "example",
        publishing,
        blends_dir=blends,
        make_tokenizer=lambda name: blend_tokenizer(settings, llm, name),
    )
    assert "## Decontamination" in report.card
    assert f"benchmark index `{version}`" in report.card
    assert f"| gsm8k | raw_documents | {SHARD} | 3 | {version} |" in report.card
    assert f"| gsm8k | filtered_conversations | {SHARD}\\|{STYLE} |" in report.card or (
        f"| gsm8k | filtered_conversations | {SHARD}|{STYLE} |" in report.card
    )

    # A new benchmark list: the checked partitions are marked unsynced, and the blend refuses
    # sources never checked against it.
    monkeypatch.setenv("MIND_DECONTAMINATION__BENCHMARKS", '["gsm8k", "commonsense_qa"]')
    run([decontamination_config])
    run([benchmark_index])
    stale = unsynced(instance)
    assert stale == {
        f"raw_documents[{SHARD}]": ("benchmark_index has a new data version",),
        f"filtered_conversations[{SHARD}|{STYLE}]": ("benchmark_index has a new data version",),
        f"longest_conversations[{SHARD}]": ("benchmark_index has a new data version",),
    }
    (blends / "example.yaml").write_text(spec.replace("phases:", "on_failed_check: fail\nphases:"))
    refused = run([blend_manifest], "example", raise_on_error=False)
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.to_string()
    assert f"raw_documents[{SHARD}]: decontamination: never checked against commonsense_qa" in (
        message
    )

    # The paraphrase judge, through the same engine: a page that rewords GSM8K test 0 (a run
    # of 12 of its words left, no 13) is a near miss the model is asked about, and its request
    # is counted in the step's usage and in the metrics store's cost view.
    monkeypatch.setenv("MIND_DECONTAMINATION__PARAPHRASE_JUDGE", "true")
    run([decontamination_config])
    run([benchmark_index])
    near = tmp_path / "near.jsonl"
    near.write_text(json.dumps({"id": "reworded", "text": REWORDED_GSM8K_0}) + "\n")
    register(make_shard_spec("nearmiss", [str(near)]))
    [event] = run([raw_documents], "nearmiss").asset_materializations_for_node("raw_documents")
    meta = {k: v.value for k, v in event.metadata.items()}
    assert meta["decontamination/judged"] == 1
    assert meta["usage/requests"] == 1 and meta["usage/completion_tokens"] >= 1
    cost = metrics_store(settings.data_dir).query(
        "SELECT requests FROM cost_per_partition WHERE asset = 'raw_documents'"
    )
    assert cost["requests"].to_pylist() == [1.0]
    print(
        "decontamination e2e:",
        {
            "chunks": len(chunk_rows),
            "chunks holding a planted item": len(dirty_chunks),
            "conversations accepted": len(filtered),
            "conversations quarantined": len(held),
            "quarantined as contaminated": removed_conversations,
            "judge said": (meta["decontamination/removed"] and "YES") or "NO",
        },
    )
