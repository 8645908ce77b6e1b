"""The whole graph in fresh pods over an object store (`MIND_DATA_DIR=s3://...`, moto's S3 server
on 127.0.0.1), through Dagster with the real engine: every asset, then `mind trace`,
`mind audit-blend`, `mind publish` and `mind gc --apply`, each step in a new, empty working copy
as a fresh pod has, so each reads only what earlier steps left in the store. The export is read
back from the bucket itself, with megatron-core and `datasets`. And a generation killed after
its first batch resumes in another pod, regenerating nothing that reached the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import MultiPartitionKey
from megatron.core.datasets.indexed_dataset import IndexedDataset

from mind_assets.blends.assets import blend_export, blend_manifest
from mind_assets.cli import main as mind_cli
from mind_assets.conversations.assets import conversations, mind_prompts
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.shards import register_shard
from mind_assets.diversity.assets import diversity, register_targets
from mind_assets.filtering.assets import filtered_conversations, longest_conversations
from mind_assets.lib.storage import read_output
from mind_assets.math_traces.assets import math_problems, problem_difficulty, solution_traces
from mind_assets.publish.assets import published_dataset
from mind_assets.settings import PROJECT_DIR
from mind_assets.task_qa.assets import prismatic_task_qa, task_qa, task_seed_catalog, task_seeds
from mind_assets_tests.conftest import WORLD_SHARD, napkin_shard, world_shard
from mind_assets_tests.s3_server import local_s3
from mind_assets_tests.test_e2e_filtering import LENIENT_PROFILE

pytestmark = pytest.mark.engine

RULES_OFF = [
    "truncated",
    "not_a_conversation",
    "unfaithful",
    "degenerate_repetition",
    "non_text",
    "too_short",
]
BLEND = """\
name: example
description: Every blendable family, to prove the whole graph over object storage.
total_tokens: 1500
seed: 0
phases:
  - name: phase1
    fraction: 1.0
    sources:
      - {name: raw_math_pages, asset: raw_documents, quality_tier: low, share: 0.2, max_epochs: 8}
      - {name: mind, asset: filtered_conversations, quality_tier: medium, share: 0.2,
         max_epochs: 8, selection: {styles: [teacher_student, debate]}}
      - {name: longest, asset: longest_conversations, quality_tier: high, share: 0.2,
         max_epochs: 8}
      - {name: qa, asset: task_qa, quality_tier: high, share: 0.15, max_epochs: 8}
      - {name: prismatic, asset: prismatic_task_qa, quality_tier: high, share: 0.1,
         max_epochs: 8}
      - {name: traces, asset: solution_traces, quality_tier: high, share: 0.15, max_epochs: 8,
         selection: {modes: [low_no_tir]}}
"""
BLEND_STYLES = ("teacher_student", "debate")  # the blend's `mind` selection above
SMALL = {
    "MIND_TASK_QA__FAMILIES": '["gsm8k"]',
    "MIND_MATH__PROBLEMS_LIMIT": "2",
    "MIND_MATH__SAMPLES_PER_PROBLEM": "1",
    "MIND_MATH__DIFFICULTY_MODES": '["low_no_tir"]',
    "MIND_DIVERSITY__MAX_TOKENS": "64",
    "MIND_DIVERSITY__MAX_SAMPLES": "8",
    "MIND_DIVERSITY__PRISMATIC_ROUNDS": "1",
    "MIND_DIVERSITY__PRISMATIC_VERIFY_SAMPLES": "0",
    "MIND_DIVERSITY__PRISMATIC_KEEP_FRACTION": "1.0",
    "MIND_BLENDS__EXPORT_FORMATS": '["parquet", "megatron"]',
}


def test_every_asset_and_command_runs_in_fresh_pods_over_the_store(
    napkin_world, task_world, settings, instance, run, mirror, tmp_path, monkeypatch, capsys
):
    blends = tmp_path / "blends"
    blends.mkdir()
    (blends / "example.yaml").write_text(BLEND)
    monkeypatch.setenv("MIND_BLENDS_DIR", str(blends))
    monkeypatch.setenv("MIND_TASK_MIRROR_DIR", str(mirror))
    lenient = {f"MIND_FILTERS__{name}": value for name, value in LENIENT_PROFILE.items()}
    for name, value in {**SMALL, **lenient}.items():
        monkeypatch.setenv(name, value)
    # Where the bytes live is under test here, not the rules (tested on their own).
    monkeypatch.setenv("MIND_FILTERS__DISABLED_RULES", json.dumps(RULES_OFF))

    with local_s3() as s3:
        url = f"s3://{s3.bucket}/graph"
        fresh_pod = s3.fresh_working_copies(url, tmp_path, monkeypatch)

        register_shard(instance, fresh_pod(), world_shard())
        napkin_world.copy_generations(fresh_pod().data_dir)
        task_world.copy_requests(fresh_pod().data_dir, ["gsm8k"])

        def step(selection, partition=None, **kwargs):
            fresh_pod()
            result = run(selection, partition, **kwargs)
            assert result.success or not kwargs.get("raise_on_error", True)
            return result

        step([mind_prompts])
        step([raw_documents], WORLD_SHARD)
        step([chunks], WORLD_SHARD)
        # The styles the blend takes (the other five run the same steps over the same gateway;
        # each pair of pods costs a second or more).
        for style in BLEND_STYLES:
            key = MultiPartitionKey({"shard": WORLD_SHARD, "style": style})
            [event] = step([conversations], key).asset_materializations_for_node("conversations")
            assert event.metadata["generated_requests"].value == 0  # reused from the store
            step([filtered_conversations], key, raise_on_error=False)
        step([longest_conversations], WORLD_SHARD)
        with task_world.task_qa_environment():
            step([task_seed_catalog])
            step([task_seeds], "gsm8k")
            [event] = step([task_qa], "gsm8k").asset_materializations_for_node("task_qa")
            assert event.metadata["usage/requests"].value == 0, "reused from the store"
            step([prismatic_task_qa], "gsm8k")
        with monkeypatch.context() as short:  # the math e2e's cap: short GSM8K solutions
            short.setenv("MIND_MAX_TOKENS", "96")
            step([math_problems], "gsm8k")
            step([problem_difficulty], "gsm8k")
            step([solution_traces], MultiPartitionKey({"source": "gsm8k", "mode": "low_no_tir"}))
        target = f"conversations:{WORLD_SHARD}:teacher_student"
        register_targets(instance, [target])
        step([diversity], target)
        step([blend_manifest], "example")
        step([blend_export], "example")
        step([published_dataset], "example")

        root = f"{s3.bucket}/graph"
        fs = s3.filesystem()
        keys = s3.object_keys()
        assert not [k for k in keys if k.endswith(".tmp")], "a temporary object was left"
        assert not [k for k in keys if k.endswith("metrics.duckdb")], "metrics.duckdb is local"
        phase = pq.read_table(f"{root}/blend_exports/example/phase1", filesystem=fs).to_pylist()
        # Every source the manifest gave tokens is in the export. Which generated families hold
        # rows is up to the 135M model (in bf16 on one machine its few task Q&A items and
        # traces all failed their rules); the raw pages always do.
        versions = f"{root}/blend_manifest/example/.versions/manifest.json"
        current = fs.cat(f"{versions}/CURRENT").decode().strip()
        manifest = json.loads(fs.cat(f"{versions}/{current}"))
        filled = {s["name"] for p in manifest["phases"] for s in p["sources"] if s["tokens"] > 0}
        assert "raw_math_pages" in filled
        assert {r["source"] for r in phase} == filled

        # The commands, each in a new pod.
        row = next(r for r in phase if r["source"] == "raw_math_pages")
        fresh_pod()
        capsys.readouterr()
        assert mind_cli(["trace", row["row_id"]]) == 0
        assert "== raw_document ==" in capsys.readouterr().out
        fresh_pod()
        assert mind_cli(["audit-blend", "example"]) == 0
        assert "blend example@" in capsys.readouterr().out
        fresh_pod()
        assert mind_cli(["publish", "example"]) == 0
        fresh_pod()
        assert mind_cli(["gc", "--older-than", "0", "--apply"]) == 0
        collected = capsys.readouterr().out
        assert "deleted" in collected or "nothing to collect" in collected

        # What a trainer reads, from the bucket itself.
        loaded = datasets.load_dataset(
            "parquet",
            data_files=f"s3://{root}/published/example/phase1/*.parquet",
            storage_options={**s3.options, "key": "testing", "secret": "testing"},
        )["train"]
        # The rows themselves, not their number: a stale download of an earlier export of the
        # same bucket path once passed a count.
        assert sorted(loaded["row_id"]) == sorted(r["row_id"] for r in phase)
        megatron = tmp_path / "trainer-megatron"
        fs.invalidate_cache()
        fs.get(f"{root}/blend_exports/example/megatron/", str(megatron), recursive=True)
        words = (megatron / "phase1.data-path.txt").read_text().split()
        for prefix in words[1::2]:
            dataset = IndexedDataset(str(megatron / prefix))
            assert len(dataset) > 0 and np.array(dataset[0])[-1] >= 0
        print(f"object store: {len(keys)} objects; export phase1 {len(phase)} rows")


# Runs as a pod of its own: generates one conversations partition in batches of 2 and is killed
# with SIGKILL the moment its first batch has reached the store.
KILLED_POD = textwrap.dedent(
    """
    import os, signal, sys
    from dagster import MultiPartitionKey, instance_for_test, materialize
    from mind_assets.conversations.assets import conversations
    from mind_assets.definitions import ASSETS
    from mind_assets.lib.instance import SHARDS_PARTITION
    from mind_assets.llm import batch_runner
    from mind_assets.llm.resource import LLMResource
    from mind_assets.settings import get_settings

    saved = batch_runner.RequestStore.save_batch

    def save_then_die(self, pairs):
        path = saved(self, pairs)  # written and uploaded
        os.kill(os.getpid(), signal.SIGKILL)

    batch_runner.RequestStore.save_batch = save_then_die
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(SHARDS_PARTITION, [sys.argv[1]])
        materialize(
            ASSETS,
            selection=[conversations],
            partition_key=MultiPartitionKey({"shard": sys.argv[1], "style": "debate"}),
            instance=instance,
            resources={"llm": LLMResource.from_settings(get_settings())},
        )
    """
)


def test_a_generation_killed_in_one_pod_resumes_in_another(
    settings, instance, run, tmp_path, monkeypatch
):
    monkeypatch.setenv("MIND_BATCH_SIZE", "2")
    monkeypatch.setenv("MIND_MAX_TOKENS", "16")  # counts requests, not words
    with local_s3() as s3:
        fresh_pod = s3.fresh_working_copies(f"s3://{s3.bucket}/resume", tmp_path, monkeypatch)
        register_shard(instance, fresh_pod(), napkin_shard("resume", 2))
        fresh_pod()
        assert run([raw_documents, chunks], "resume").success
        total = read_output(fresh_pod().data_dir / "chunks" / "resume.parquet").num_rows
        assert total > 2, "needs more than one batch"

        fresh_pod()
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_POD, "resume"],
            env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        batches = [k for k in s3.object_keys() if "/_requests/conversations/resume/" in k]
        assert len(batches) == 1

        fresh_pod()  # a new pod, nothing on its disk but what the store gives it
        key = MultiPartitionKey({"shard": "resume", "style": "debate"})
        [event] = run([conversations], key).asset_materializations_for_node("conversations")
        assert event.metadata["reused_requests"].value == 2
        assert event.metadata["generated_requests"].value == total - 2
        # The finished partition cleared its batches from the store too.
        assert not [k for k in s3.object_keys() if "/_requests/conversations/resume/" in k]
