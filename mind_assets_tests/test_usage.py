"""Cost accounting: what a materialization's generation cost."""

from __future__ import annotations

import pytest

from mind_assets.llm.batch_runner import RunStats
from mind_assets.llm.usage import Usage
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import ModelPrice


def test_usage_adds_up_the_runs_and_counts_only_generated_requests():
    stats = [
        RunStats(
            requested=10,
            reused=4,
            generated=6,
            output_tokens=600,
            input_tokens=3000,
            generation_seconds=12.0,
        ),
        RunStats(
            requested=2, generated=2, output_tokens=100, input_tokens=400, generation_seconds=3.0
        ),
    ]
    usage = Usage.of(stats)
    assert usage == Usage(requests=8, prompt_tokens=3400, completion_tokens=700, engine_seconds=15)


def test_offline_runs_count_device_seconds_and_a_price_makes_dollars():
    usage = Usage(requests=8, prompt_tokens=2_000_000, completion_tokens=500_000, engine_seconds=90)
    unpriced = usage.metrics(model="m", mode="offline", devices=4, prices={})
    assert unpriced == {
        "usage/requests": 8,
        "usage/prompt_tokens": 2_000_000,
        "usage/completion_tokens": 500_000,
        "usage/engine_seconds": 90,
        "usage/device_seconds": 360,
    }
    price = ModelPrice(input_per_million=0.5, output_per_million=2.0, per_device_hour=3.6)
    priced = usage.metrics(model="m", mode="offline", devices=4, prices={"m": price})
    # 2M x 0.5 + 0.5M x 2.0 + 360 device-seconds at 3.6 per hour
    assert priced["usage/dollars"] == pytest.approx(1.0 + 1.0 + 0.36)
    # Another model's price does not apply.
    assert "usage/dollars" not in usage.metrics(
        model="other", mode="offline", devices=1, prices={"m": price}
    )


def test_server_mode_bills_tokens_only():
    usage = Usage(requests=1, prompt_tokens=1_000_000, completion_tokens=0, engine_seconds=50)
    found = usage.metrics(
        model="m",
        mode="server",
        devices=1,
        prices={"m": ModelPrice(input_per_million=1.0, per_device_hour=100.0)},
    )
    assert "usage/device_seconds" not in found and found["usage/dollars"] == pytest.approx(1.0)


def test_cost_per_partition_is_the_latest_materialization_per_partition(tmp_path):
    store = metrics_store(tmp_path)
    store.record_aggregates("task_qa", "gsm8k", {"usage/requests": 4, "usage/dollars": 0.5})
    store.record_aggregates("task_qa", "gsm8k", {"usage/requests": 6, "usage/dollars": 0.25})
    store.record_aggregates("task_qa", "arc_easy", {"accepted": 3})  # no usage: not a row
    rows = store.query("SELECT asset, partition, requests, dollars FROM cost_per_partition")
    assert rows.to_pylist() == [
        {"asset": "task_qa", "partition": "gsm8k", "requests": 6.0, "dollars": 0.25}
    ]
