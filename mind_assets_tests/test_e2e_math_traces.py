"""Verified solution traces with the real engine on 10 real GSM8K training problems, all six
modes; the verifier's labels are checked against an independent numeric comparison."""

import re

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, MultiPartitionKey

from mind_assets.lib.storage import asset_path
from mind_assets.math_traces.assets import math_problems, solution_traces
from mind_assets.math_traces.sandbox import OUTCOMES
from mind_assets.math_traces.sources import MODES
from mind_assets.metrics.report import format_metrics
from mind_assets.metrics.store import metrics_store

pytestmark = pytest.mark.engine
PROBLEMS = 10
PLAIN_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
COMPLETE_BLOCK = re.compile(r"```python[^\n]*\n.*?```", re.DOTALL)


def test_traces_for_ten_gsm8k_problems_in_all_six_modes(
    settings, run, instance, mirror, monkeypatch
):
    monkeypatch.setenv("MIND_TASK_MIRROR_DIR", str(mirror))
    monkeypatch.setenv("MIND_MATH_PROBLEMS_LIMIT", str(PROBLEMS))
    monkeypatch.setenv("MIND_MATH_SAMPLES_PER_PROBLEM", "2")
    monkeypatch.setenv("MIND_MATH_MAX_TOOL_CALLS", "2")
    monkeypatch.setenv("MIND_MAX_TOKENS", "96")
    assert run([math_problems], "gsm8k").success
    problems = pq.read_table(asset_path(settings.data_dir, "math_problems", "gsm8k"))
    assert problems.num_rows == PROBLEMS

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
