"""task_qa end to end with the real engine: gsm8k from the shared training split, and
commonsense_qa from a hand-written fixture in the Hugging Face layout."""

import json
import re

import pyarrow.parquet as pq
import pytest

from mind_assets.decontamination.assets import benchmark_index
from mind_assets.decontamination.record import read_record
from mind_assets.lib.storage import asset_path
from mind_assets.llm.batch_runner import RequestStore
from mind_assets.llm.offline_engine import vllm_distribution
from mind_assets.task_qa.assets import task_qa, task_seed_catalog, task_seeds

pytestmark = pytest.mark.engine


def test_task_qa_for_gsm8k_and_a_multiple_choice_family(settings, run, mirror, monkeypatch):
    monkeypatch.setenv("MIND_TASK_MIRROR_DIR", str(mirror))
    monkeypatch.setenv("MIND_TASK_QA__FAMILIES", json.dumps(["gsm8k", "commonsense_qa"]))
    monkeypatch.setenv("MIND_TASK_QA__ITEMS", "8")
    monkeypatch.setenv("MIND_TASK_QA__SEED_LIMIT", "300")
    monkeypatch.setenv("MIND_MAX_TOKENS", "256")
    # Both families' own evaluation splits are benchmarks: commonsense_qa validation (2 fixture
    # questions; it has no test split) and GSM8K test (1,319).
    monkeypatch.setenv("MIND_DECONTAMINATION__BENCHMARKS", json.dumps(["gsm8k", "commonsense_qa"]))
    [index] = run([benchmark_index]).asset_materializations_for_node("benchmark_index")
    assert index.metadata["items"].value == 2 + 1319
    assert run([task_seed_catalog]).success
    summary = {}
    for family in ("gsm8k", "commonsense_qa"):
        assert run([task_seeds], family).success
        [event] = run([task_qa], family).asset_materializations_for_node("task_qa")
        # Every item, in both forms, checked against the index by the `contaminated` rule.
        assert event.metadata["decontamination/checked"].value == 2 * 8
        assert (
            event.metadata["decontamination/index_version"].value
            == index.metadata["index_version"].value
        )
        record = read_record(pq.read_schema(asset_path(settings.data_dir, "task_qa", family)))
        assert sorted(record.benchmarks) == ["commonsense_qa", "gsm8k"]
        assert event.metadata["licence"].value == "mit"
        accepted = pq.read_table(asset_path(settings.data_dir, "task_qa", family)).to_pylist()
        quarantined = pq.read_table(
            asset_path(settings.data_dir, "task_qa", family, suffix=".quarantine.parquet")
        ).to_pylist()
        rows = accepted + quarantined
        assert len(rows) == 2 * 8, "each item in both forms"
        assert {r["form"] for r in rows} == {"multiple_choice", "open_ended"}
        # Replies that did not parse were re-sampled (MIND_TASK_QA__PARSE_RETRIES, default 2):
        # each got at least one retry, and each row traces to the attempt it kept.
        meta = {k: v.value for k, v in event.metadata.items()}
        assert (
            meta["parse_failures_after_retries"]
            <= meta["parse_failures_first_attempt"]
            <= meta["parse_retries_requested"]
        )
        requests_dir = asset_path(settings.data_dir, "_requests", "task_qa", family, suffix="")
        stored = RequestStore(requests_dir / "generate").load()
        for row in rows:
            assert stored[row["request_hash"]].result.text == row["raw_output"]
        seed_ids = set(
            pq.read_table(asset_path(settings.data_dir, "task_seeds", family))[
                "seed_id"
            ].to_pylist()
        )
        for row in rows:  # lineage on every row, kept or not
            assert row["seed_ids"] and set(row["seed_ids"]) <= seed_ids
            # Structured generation is the default: JSON prompts, decoding held to the schema.
            assert row["prompt_id"].startswith("task_qa/structured/generate_")
            assert row["prompt_version"]
            assert row["model"].startswith("HuggingFaceTB/SmolLM2")
            assert (row["engine"], row["engine_version"]) == vllm_distribution()
            assert json.loads(row["sampling_params"])["seed"] == row["seed"]
            assert row["raw_output"]
        for row in quarantined:
            assert row["rejected_by"]
            # A constrained reply that ended by itself is schema-valid JSON: it fails to parse
            # only when cut at max_tokens, or when a string ran to its cap (a cut text). (A math
            # item's multiple-choice form also fails when its answer is not a number.)
            failures = [r for r in row["rejected_by"] if r.startswith("parse_failure")]
            for failure in failures:
                assert (
                    row["finish_reason"] == "length"
                    or failure.endswith("reached its length cap (cut off)")
                    or failure == "parse_failure: final answer is not a number"
                ), (failure, row["finish_reason"], row["raw_output"])
        for row in rows:
            if row["finish_reason"] == "stop":
                json.loads(row["raw_output"])
        for row in rows:
            assert row["licence"] == "mit"  # gsm8k: the hand-read table; commonsense_qa: its card
            assert row["answer_check"] == ("math" if family == "gsm8k" else "choice")
        for row in accepted:
            assert row["answer"] and row["reasoning"]
            if row["form"] == "multiple_choice":
                assert row["answer"] in row["choices"]
                assert not re.fullmatch(r"\(?[A-H]\)?", row["answer"]), "a letter, not an answer"
        enriched = [r for r in rows if r["enrich_prompt_id"]]
        for row in enriched:
            assert row["enrich_prompt_version"]
        summary[family] = (len(accepted), len(quarantined), len(enriched))
    print("task_qa accepted/quarantined/enriched:", summary)
