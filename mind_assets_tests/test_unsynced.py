"""Dagster's own *unsynced* status follows what changes generated output: a task Q&A prompt edit
marks only the families that use the prompt, a new MIND_MODEL every generated partition, a new
filter threshold only the filtered partitions; and the regeneration schedule asks Dagster which
partitions to refresh.

Staleness depends on the asset graph and the recorded provenance, not on what the step computed,
so most partitions here are materialized by stand-ins with the real assets' specs (same key,
deps, partitions and code version). The MIND_MODEL test materializes `conversations` and
`filtered_conversations` for real, on the session's real napkin generations."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from dagster import (
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MultiPartitionKey,
    asset,
    build_schedule_context,
    materialize,
    multi_asset,
)

from mind_assets.conversations.assets import conversations
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.definitions import defs as GRAPH_DEFS
from mind_assets.filtering.assets import (
    CHECK_ONLY_THRESHOLDS,
    filter_config_version,
    filtered_conversations,
)
from mind_assets.lib.instance import SHARDS_PARTITION
from mind_assets.lib.storage import write_parquet_version
from mind_assets.lib.versions import UnsyncedStatus
from mind_assets.llm.versions import llm_version_inputs
from mind_assets.math_traces.assets import solution_traces
from mind_assets.operations.schedules import (
    regenerate_unsynced_conversations,
    regenerate_unsynced_solution_traces,
    regenerate_unsynced_task_qa,
)
from mind_assets.operations.versions import record_versions
from mind_assets.settings import PROJECT_DIR, get_settings
from mind_assets.task_qa.assets import catalog_path, task_qa, task_qa_prompts
from mind_assets.task_qa.catalog import CatalogEntry
from mind_assets.task_qa.outputs import TASK_FAMILIES_PARTITION
from mind_assets_tests.conftest import WORLD_SHARD, world_shard

STYLES = ("debate", "two_students")
FAMILIES = {"arc_easy": "multiple_choice", "piqa": "multiple_choice", "gsm8k": "generate_until"}


def stand_in(real: AssetsDefinition) -> AssetsDefinition:
    """An asset with `real`'s spec whose step only reports a materialization."""
    [spec] = real.specs

    @multi_asset(specs=[spec], name=f"stand_in_{spec.key.path[-1]}")
    def _stand_in(context) -> MaterializeResult:
        return MaterializeResult(
            asset_key=spec.key, data_version=DataVersion(f"out-{context.partition_key}")
        )

    return _stand_in


def materialize_stand_in(real: AssetsDefinition, partition, instance) -> None:
    assert materialize([stand_in(real)], partition_key=partition, instance=instance).success


def unsynced(instance, key: str) -> dict[str, tuple[str, ...]]:
    status = UnsyncedStatus.of_repository(instance, GRAPH_DEFS.get_repository_def())
    return {item.partition: item.causes for item in status.unsynced_partitions(key)}


def evaluate(instance, schedule=None):
    """One tick of a regeneration schedule (default: conversations), evaluated by Dagster."""
    # As a context manager: the context opens its own instance from the ref, and left open that
    # instance stays Dagster's current definitions-state storage after it is gone.
    with build_schedule_context(
        instance=instance,
        repository_def=GRAPH_DEFS.get_repository_def(),
        scheduled_execution_time=datetime.now(UTC),
    ) as context:
        return (schedule or regenerate_unsynced_conversations).evaluate_tick(context)


def schedule_requests(
    instance, schedule=None, *, accept: bool = True
) -> list[tuple[str, list[str]]]:
    """What one tick requests, as (partition, assets). With `accept`, the tick is taken as
    Dagster takes an accepted tick: a run is recorded for each request's run key."""
    requests = evaluate(instance, schedule).run_requests or []
    if accept:
        for request in requests:
            launch(instance, request.run_key)
    return [
        (str(r.partition_key), sorted(k.to_user_string() for k in r.asset_selection))
        for r in requests
    ]


@asset
def accepted_tick_run() -> None:
    """Stands for the run an accepted tick's request launches: only its run key matters."""


def launch(instance, run_key: str) -> None:
    """A run with `run_key`, as the daemon launches for an accepted tick's request."""
    run = materialize([accepted_tick_run], instance=instance, tags={"dagster/run_key": run_key})
    assert run.success


@pytest.fixture
def prompts_dir(tmp_path, monkeypatch) -> Path:
    """An editable copy of the project's prompts."""
    target = tmp_path / "prompts"
    shutil.copytree(PROJECT_DIR / "prompts", target)
    monkeypatch.setenv("MIND_PROMPTS_DIR", str(target))
    return target


def edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# edited\n")


def observe(source, instance) -> None:
    """As *Observe* in the UI does: a run of the source's observation."""
    assert materialize([source], selection=[source], instance=instance).success


def test_version_inputs_hold_what_changes_output_and_nothing_else(settings, monkeypatch):
    base = llm_version_inputs(settings)
    monkeypatch.setenv("MIND_BATCH_SIZE", "3")
    monkeypatch.setenv("MIND_THREADS", "1")
    monkeypatch.setenv("MIND_TENSOR_PARALLEL_SIZE", "2")
    assert llm_version_inputs(get_settings()) == base
    for name, value in [("MIND_MODEL", "Qwen/Qwen3-0.6B"), ("MIND_DTYPE", "bfloat16")]:
        monkeypatch.setenv(name, value)
        assert llm_version_inputs(get_settings()) != base
    filters = filter_config_version(settings, None)
    monkeypatch.setenv("MIND_FILTERS__MAX_NEAR_DUPLICATE_RATE", "0.1")  # a check, not a filter
    assert filter_config_version(get_settings(), None) == filters
    monkeypatch.setenv("MIND_FILTERS__MIN_TURNS", "3")
    assert filter_config_version(get_settings(), None) != filters
    assert set(settings.filters.model_dump()) >= CHECK_ONLY_THRESHOLDS


def test_editing_a_task_qa_prompt_marks_only_its_families_unsynced(settings, instance, prompts_dir):
    entries = [
        CatalogEntry(family, family, True, "", output_type, "x", None, "train", None, "test", None)
        for family, output_type in FAMILIES.items()
    ]
    write_parquet_version(
        pa.Table.from_pylist([e.__dict__ for e in entries]), catalog_path(settings)
    )
    instance.add_dynamic_partitions(TASK_FAMILIES_PARTITION, list(FAMILIES))
    instance.add_dynamic_partitions(SHARDS_PARTITION, ["s1"])
    record_versions(instance, get_settings())  # as the schedule's tick does, without a run
    for family in FAMILIES:
        materialize_stand_in(task_qa, family, instance)
    materialize_stand_in(
        conversations, MultiPartitionKey({"shard": "s1", "style": "debate"}), instance
    )
    assert unsynced(instance, "task_qa") == {}

    edit(prompts_dir / "task_qa" / "structured" / "generate_open_ended.yaml")
    observe(task_qa_prompts, instance)
    # The run observed what the schedule would have: nothing is left to record.
    assert record_versions(instance, get_settings()) == []
    assert unsynced(instance, "task_qa") == {
        "gsm8k": ("task_qa_prompts[gsm8k] has a new data version",)
    }
    assert unsynced(instance, "conversations") == {}

    edit(prompts_dir / "task_qa" / "structured" / "generate_multiple_choice.yaml")
    changes = record_versions(instance, get_settings())
    assert sorted((c.key, c.partition) for c in changes) == [
        ("task_qa_prompts", "arc_easy"),
        ("task_qa_prompts", "piqa"),
    ]
    assert sorted(unsynced(instance, "task_qa")) == ["arc_easy", "gsm8k", "piqa"]


def test_changing_a_filter_threshold_marks_only_filtered_partitions_unsynced(
    settings, instance, monkeypatch
):
    instance.add_dynamic_partitions(SHARDS_PARTITION, ["s1"])
    record_versions(instance, get_settings())  # as the schedule's tick does, without a run
    keys = [MultiPartitionKey({"shard": "s1", "style": style}) for style in STYLES]
    for key in keys:
        materialize_stand_in(conversations, key, instance)
        materialize_stand_in(filtered_conversations, key, instance)
    assert unsynced(instance, "filtered_conversations") == {}
    assert schedule_requests(instance) == []

    monkeypatch.setenv("MIND_FILTERS__MIN_COMPLETION_TOKENS", "80")
    assert [c.key for c in record_versions(instance, get_settings())] == ["filter_config"]
    assert unsynced(instance, "filtered_conversations") == {
        str(key): ("filter_config has a new data version",) for key in keys
    }
    assert unsynced(instance, "conversations") == {}
    # The schedule filters again, and generates nothing.
    assert schedule_requests(instance) == [(str(key), ["filtered_conversations"]) for key in keys]


@pytest.mark.engine  # reads the session's napkin generations, made by the engine
def test_changing_mind_model_marks_every_generated_partition_unsynced(
    napkin_world, settings, instance, register, run, monkeypatch
):
    """Real `conversations` and `filtered_conversations` (the resume path reuses the session's
    generations), stand-ins for task Q&A and traces."""
    register(world_shard())
    instance.add_dynamic_partitions(TASK_FAMILIES_PARTITION, ["gsm8k"])
    napkin_world.copy_generations(settings.data_dir, STYLES)
    record_versions(instance, get_settings())  # as the schedule's tick does, without a run
    assert run([raw_documents, chunks], WORLD_SHARD).success
    keys = [MultiPartitionKey({"shard": WORLD_SHARD, "style": style}) for style in STYLES]
    for key in keys:
        generated = run([conversations], key)
        assert generated.success
        [event] = generated.asset_materializations_for_node("conversations")
        assert event.metadata["usage/requests"].value == 0, "generated by the session's world"
        # The embedded model's conversations may all be quarantined, which fails the blocking
        # not_empty check; the partition is materialized either way, and that is what counts here.
        filtered = run([filtered_conversations], key, raise_on_error=False)
        assert filtered.asset_materializations_for_node("filtered_conversations")
    trace_key = MultiPartitionKey({"source": "gsm8k", "mode": "low_no_tir"})
    materialize_stand_in(solution_traces, trace_key, instance)
    materialize_stand_in(task_qa, "gsm8k", instance)
    for key in ("conversations", "filtered_conversations", "task_qa", "solution_traces"):
        assert unsynced(instance, key) == {}, key
    assert schedule_requests(instance) == []

    monkeypatch.setenv("MIND_MODEL", "Qwen/Qwen3-0.6B")
    assert [c.key for c in record_versions(instance, get_settings())] == ["llm_config"]
    cause = ("llm_config has a new data version",)
    assert unsynced(instance, "conversations") == {str(key): cause for key in keys}
    assert unsynced(instance, "task_qa") == {"gsm8k": cause}
    assert unsynced(instance, "solution_traces") == {str(trace_key): cause}
    # Nothing that does not call the model is unsynced, until its input is regenerated.
    assert unsynced(instance, "filtered_conversations") == {}
    assert unsynced(instance, "chunks") == {}
    assert schedule_requests(instance) == [
        (str(key), ["conversations", "filtered_conversations"]) for key in keys
    ]


def test_the_schedule_asks_about_a_bounded_number_of_partitions_and_goes_on_next_tick(
    settings, instance, monkeypatch
):
    """With more partitions than a tick may ask about, each tick asks about the next ones after
    the last it asked (the cursor in the instance) and wraps around."""
    instance.add_dynamic_partitions(SHARDS_PARTITION, ["s1", "s2"])
    record_versions(instance, get_settings())
    keys = [
        MultiPartitionKey({"shard": shard, "style": style})
        for shard in ("s1", "s2")
        for style in STYLES
    ]
    for key in keys:
        materialize_stand_in(filtered_conversations, key, instance)
    monkeypatch.setenv("MIND_FILTERS__MIN_COMPLETION_TOKENS", "80")
    monkeypatch.setenv("MIND_CONVERSATIONS__REGENERATION_SCAN_LIMIT", "3")
    ordered = sorted(str(k) for k in keys)
    ticks = [[p for p, _ in schedule_requests(instance)] for _ in range(3)]
    assert ticks == [ordered[:3], [ordered[3], *ordered[:2]], [ordered[2], ordered[3], ordered[0]]]

    # The budget ends a tick early, and the next goes on after the last partition it took.
    monkeypatch.setenv("MIND_CONVERSATIONS__REGENERATION_SCAN_LIMIT", "100")
    monkeypatch.setenv("MIND_CONVERSATIONS__REGENERATION_BUDGET", "1")
    assert [p for p, _ in schedule_requests(instance)] == [ordered[1]]
    assert [p for p, _ in schedule_requests(instance)] == [ordered[2]]


def test_a_dropped_tick_moves_no_cursor_and_its_partitions_are_asked_for_again(
    settings, instance, monkeypatch
):
    """The scan's position advances only once Dagster accepted the tick that asked (a run of
    its requests exists): a tick whose requests never became runs is asked again."""
    instance.add_dynamic_partitions(SHARDS_PARTITION, ["s0", "s1", "s2"])
    record_versions(instance, get_settings())
    keys = [MultiPartitionKey({"shard": shard, "style": "debate"}) for shard in ("s1", "s2")]
    for key in keys:
        materialize_stand_in(filtered_conversations, key, instance)
    monkeypatch.setenv("MIND_FILTERS__MIN_COMPLETION_TOKENS", "80")
    monkeypatch.setenv("MIND_CONVERSATIONS__REGENERATION_BUDGET", "1")
    first = schedule_requests(instance, accept=False)  # dropped: no run is launched
    assert first == [(str(keys[0]), ["filtered_conversations"])]
    assert schedule_requests(instance) == first  # asked again, and now accepted
    assert schedule_requests(instance) == [(str(keys[1]), ["filtered_conversations"])]


def test_a_task_qa_prompt_edit_makes_its_schedule_request_exactly_those_families(
    settings, instance, prompts_dir
):
    entries = [
        CatalogEntry(family, family, True, "", output_type, "x", None, "train", None, "test", None)
        for family, output_type in FAMILIES.items()
    ]
    write_parquet_version(
        pa.Table.from_pylist([e.__dict__ for e in entries]), catalog_path(settings)
    )
    instance.add_dynamic_partitions(TASK_FAMILIES_PARTITION, list(FAMILIES))
    record_versions(instance, get_settings())
    for family in FAMILIES:
        materialize_stand_in(task_qa, family, instance)
    assert schedule_requests(instance, regenerate_unsynced_task_qa) == []

    edit(prompts_dir / "task_qa" / "structured" / "generate_multiple_choice.yaml")
    assert schedule_requests(instance, regenerate_unsynced_task_qa) == [
        ("arc_easy", ["task_qa"]),
        ("piqa", ["task_qa"]),
    ]
    # Nothing of another family's schedule moves.
    assert schedule_requests(instance, regenerate_unsynced_solution_traces) == []
    assert schedule_requests(instance) == []


def test_a_solution_trace_prompt_edit_makes_its_schedule_request_exactly_that_mode(
    settings, instance, prompts_dir
):
    record_versions(instance, get_settings())
    keys = [MultiPartitionKey({"source": "gsm8k", "mode": m}) for m in ("low_tir", "high_no_tir")]
    for key in keys:
        materialize_stand_in(solution_traces, key, instance)
    assert schedule_requests(instance, regenerate_unsynced_solution_traces) == []

    edit(prompts_dir / "math" / "low_tir.yaml")
    assert schedule_requests(instance, regenerate_unsynced_solution_traces) == [
        (str(keys[0]), ["solution_traces"])
    ]
    assert schedule_requests(instance, regenerate_unsynced_task_qa) == []
