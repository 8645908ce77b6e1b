"""benchmarks/scale.py at a tiny size, so the benchmark's code paths cannot rot unnoticed.

Twenty shards on a fresh SQLite instance go through every measurement the benchmark takes at
10,000: bulk and CLI registration, inbox sensor ticks, runless materializations, the schedule
tick, the automation evaluation, the UI's partition-status GraphQL query and the fresh-process
definitions load. Nothing here is timed; the figures' presence and the counts are checked.
"""

from benchmarks import scale
from mind_assets.conversations.styles import STYLE_KEYS


def test_scale_benchmark_at_twenty_shards(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    [result] = scale.run_backend("sqlite", [20], tmp_path)
    assert result["shards"] == 20
    # Every measured registration path left its shard: 20 keys, the GraphQL answer sees them.
    assert result["gql_partitions"] == 20 * len(STYLE_KEYS)
    assert result["sensor_runs"] == scale.INBOX_FILES
    assert result["materialized"] == len(STYLE_KEYS)  # owm-0000000, every style
    # The stale shard's partitions are requested, within the regeneration budget.
    assert 0 < result["schedule_runs"] <= len(STYLE_KEYS)
    assert result["automation_requested"] >= 0
    assert set(result["defs"]) >= {"import_s", "validate_s", "location_s"}
    section = scale.report([result, {"backend": "postgres", "shards": 20, "skipped": True}], [])
    assert "| sqlite 20 | postgres 20 |" in section
    assert "not run" in section and section.endswith("<!-- scale:end -->")
    assert list(tmp_path.iterdir()) == []  # the instance and its data are removed
