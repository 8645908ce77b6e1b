"""Verified solution traces with the real engine on 5 real GSM8K training problems, all six
modes; the verifier's labels are checked against an independent numeric comparison. Then a
blend of real verified traces, materialized and exported, traces back to its problems."""

import json
import re

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, MultiPartitionKey

from mind_assets.blends.assets import (
    blend_export,
    blend_manifest,
    export_dir,
    instance_lookup,
    load_manifest,
)
from mind_assets.blends.lineage import format_audit
from mind_assets.cli import main as mind_cli
from mind_assets.lib.storage import asset_path
from mind_assets.math_traces.assets import math_problems, problem_difficulty, solution_traces
from mind_assets.math_traces.sandbox import OUTCOMES
from mind_assets.math_traces.sources import MODES
from mind_assets.metrics.report import format_metrics
from mind_assets.metrics.store import metrics_store

pytestmark = pytest.mark.engine
PROBLEMS = 5
PLAIN_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
COMPLETE_BLOCK = re.compile(r"```python[^\n]*\n.*?```", re.DOTALL)


def test_traces_for_five_gsm8k_problems_in_all_six_modes(
    settings, run, instance, mirror, monkeypatch
):
    monkeypatch.setenv("MIND_TASK_MIRROR_DIR", str(mirror))
    monkeypatch.setenv("MIND_MATH__PROBLEMS_LIMIT", str(PROBLEMS))
    monkeypatch.setenv("MIND_MATH__SAMPLES_PER_PROBLEM", "2")
    monkeypatch.setenv("MIND_MATH__MAX_TOOL_CALLS", "2")
    monkeypatch.setenv("MIND_MAX_TOKENS", "96")
    assert run([math_problems], "gsm8k").success
    problems = pq.read_table(asset_path(settings.data_dir, "math_problems", "gsm8k"))
    assert problems.num_rows == PROBLEMS
    # Difficulty and references from both high modes; their partitions below reuse these.
    assert run([problem_difficulty], "gsm8k").success
    difficulty = pq.read_table(asset_path(settings.data_dir, "problem_difficulty", "gsm8k"))
    assert difficulty.num_rows == PROBLEMS
    assert all(n == 2 * 2 for n in difficulty.column("difficulty_samples").to_pylist())
    too_easy = {r["problem_id"] for r in difficulty.to_pylist() if r["too_easy"]}

    checked = 0
    tool_calls = 0
    for mode in MODES:
        key = MultiPartitionKey({"source": "gsm8k", "mode": mode})
        result = run([solution_traces], key)
        assert result.success
        [check] = result.get_asset_check_evaluations()
        assert check.passed, mode
        kept = pq.read_table(asset_path(settings.data_dir, "solution_traces", "gsm8k", mode))
        quarantined = pq.read_table(
            asset_path(
                settings.data_dir, "solution_traces", "gsm8k", mode, suffix=".quarantine.parquet"
            )
        )
        rows = kept.to_pylist() + quarantined.to_pylist()
        assert len(rows) == 2 * PROBLEMS, mode  # k=2
        assert all(r["is_correct"] for r in kept.to_pylist())
        assert not {r["problem_id"] for r in kept.to_pylist()} & too_easy  # every mode
        for row in rows:
            assert row["mode"] == mode and row["prompt_id"] == f"math/{mode}"
            assert row["model"] and row["engine"] and row["request_hash"] and row["solution"]
            assert row["length_bucket"] and row["seq_tokens"] > 0
            # tool calls ran in the jail; no-TIR modes run no code and need none
            assert row["isolation"] == ("none-needed" if mode.endswith("no_tir") else "bubblewrap")
            answer, reference = row["normalized_answer"], row["reference_answer"]
            if answer is None:
                assert not row["is_correct"]
            elif PLAIN_NUMBER.match(answer) and PLAIN_NUMBER.match(reference):
                # An oracle independent of math-verify for plain numbers.
                assert row["is_correct"] == (float(answer) == float(reference)), row
                checked += 1
        if mode.endswith("no_tir"):
            assert all(r["tool_calls"] == [] for r in rows)
        else:
            # Every complete code block the model wrote (up to the cap) was run in the sandbox.
            for row in rows:
                # (a block after a boxed answer is not run: the trace has already answered)
                blocks = COMPLETE_BLOCK.findall(row["solution"].split("\\boxed")[0])
                assert len(row["tool_calls"]) == min(len(blocks), 2), row["solution"]
                for call in row["tool_calls"]:
                    assert call["outcome"] in OUTCOMES
                    assert f"```output\n{call['output'].rstrip()}" in row["solution"]
            tool_calls += sum(len(r["tool_calls"]) for r in rows)
        metadata = instance.get_latest_materialization_event(
            AssetKey("solution_traces")
        ).asset_materialization.metadata
        assert metadata["traces"].value == 2 * PROBLEMS and "maj_at_k" in metadata
        assert metadata["isolation"].value == rows[0]["isolation"]

    rates = metrics_store(settings.data_dir).query("SELECT * FROM math_pass_rates").to_pylist()
    assert sorted(r["mode"] for r in rates) == sorted(MODES)
    assert all(r["problems"] == PROBLEMS and r["k"] == 2 for r in rates)
    report = format_metrics(settings.data_dir, ["math_pass_rates"])
    assert "maj_at_k" in report and all(mode in report for mode in MODES)
    print(report)
    print(f"labels checked against the numeric oracle: {checked}; tool calls run: {tool_calls}")
    assert checked > 0  # the oracle compared at least one plain-number answer


# One-step sums the 135M model can get right within the token cap (it solves no GSM8K problem
# in 96 tokens), so that verified traces exist to blend.
EASY = [
    (f"Sam has {a} apples and buys {b} more. How many apples does Sam have now?", a + b)
    for a, b in ((2, 3), (4, 1), (5, 5), (1, 1), (3, 6), (7, 2), (6, 3), (8, 1))
]
BLEND_SPEC = """
name: example
total_tokens: 100
phases:
  - name: reasoning
    fraction: 1.0
    sources:
      - name: traces
        asset: solution_traces
        selection: {modes: [low_no_tir]}
        quality_tier: high
        share: 1.0
        max_epochs: 20
"""


def test_a_blend_row_from_verified_traces_traces_to_its_problem(
    settings, run, instance, tmp_path, monkeypatch, capsys
):
    # Math source partitions are fixed when the definitions load (one, gsm8k): the easy
    # problems are configured under that name, as a local dataset with its own test split.
    mirror = tmp_path / "mirror" / "easy" / "default"
    mirror.mkdir(parents=True)
    rows = [{"question": q, "answer": str(a)} for q, a in EASY]
    (mirror / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (mirror / "test.jsonl").write_text(json.dumps({"question": "What is 9 + 9?", "answer": "18"}))
    source = {"name": "gsm8k", "dataset_path": "easy", "answer_format": "plain"}
    monkeypatch.setenv("MIND_MATH__SOURCES", json.dumps([source]))
    monkeypatch.setenv("MIND_TASK_MIRROR_DIR", str(tmp_path / "mirror"))
    monkeypatch.setenv("MIND_MATH__SAMPLES_PER_PROBLEM", "2")
    monkeypatch.setenv("MIND_MAX_TOKENS", "96")
    # One mode and easy sums, to have verified rows to blend: no difficulty pass.
    monkeypatch.setenv("MIND_MATH__DIFFICULTY_FILTER", "false")
    monkeypatch.setenv("MIND_MATH__REFERENCE_REPAIR", "false")
    blends = tmp_path / "blends"
    blends.mkdir()
    (blends / "example.yaml").write_text(BLEND_SPEC)
    monkeypatch.setenv("MIND_BLENDS_DIR", str(blends))

    assert run([math_problems], "gsm8k").success
    key = MultiPartitionKey({"source": "gsm8k", "mode": "low_no_tir"})
    assert run([solution_traces], key).success
    kept = pq.read_table(asset_path(settings.data_dir, "solution_traces", "gsm8k", "low_no_tir"))
    assert kept.num_rows >= 1, "no sample verified correct: nothing to blend"
    assert run([blend_manifest], "example").success
    assert run([blend_export], "example").success

    exported = pq.read_table(export_dir(settings, "example") / "reasoning").to_pylist()
    assert exported and {r["source_asset"] for r in exported} == {"solution_traces"}
    problems = {
        p["problem_id"]: p
        for p in pq.read_table(asset_path(settings.data_dir, "math_problems", "gsm8k")).to_pylist()
    }
    traces = {t["trace_id"]: t for t in kept.to_pylist()}
    row = exported[0]
    capsys.readouterr()
    assert mind_cli(["trace", row["row_id"]]) == 0
    traced = capsys.readouterr().out
    trace = traces[row["source_row_id"]]
    problem = problems[trace["problem_id"]]
    assert "== solution_traces ==" in traced and "== generation_request ==" in traced
    assert "== problem ==" in traced and json.dumps(problem["question"]) in traced
    assert trace["request_hash"] in traced

    # The audit names the trace partition and its problems, not a shard.
    manifest = load_manifest(settings, "example")
    audit = format_audit(manifest, settings.data_dir, instance_lookup(instance)).splitlines()
    assert "up to date" in audit[0]
    assert any("solution_traces" in line and "low_no_tir|gsm8k" in line for line in audit)
    assert any(line.split()[:2] == ["math_problems", "gsm8k"] for line in audit)
