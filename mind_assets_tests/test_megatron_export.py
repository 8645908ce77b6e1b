"""The Megatron export of a small real blend over napkin sections, without the engine: megatron-core
loads every prefix, its documents are the parquet export's rows, and its blended GPT dataset
reads samples from a moved copy of the export."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mind_assets.blends.assets import manifest_dir, write_manifest
from mind_assets.blends.export import ExportError
from mind_assets.blends.lineage import trace_row
from mind_assets.blends.manifest import build_manifest, manifest_from_json, megatron_prefix
from mind_assets.blends.release import ReleaseRequest, write_release
from mind_assets.blends.spec import load_blend_spec
from mind_assets.blends.tokens import TokenCache
from mind_assets.cli import main as mind_cli
from mind_assets.lib.storage import asset_path
from mind_assets.lib.tokenizer import HFTokenizer, load_tokenizer, token_counter
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import BlendSettings, get_settings
from mind_assets_tests.blend_helpers import WordTokenizer
from mind_assets_tests.conftest import MODELS_DIR, napkin_sections

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex.*")
    from megatron.core.datasets.blended_dataset import BlendedDataset
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import get_blend_from_list
    from megatron.core.tokenizers import MegatronTokenizer

BLEND = "napkin_mix"
# Three assets, each a slice of real napkin sections, in the files the manifest resolves.
SLICES = {
    ("raw_documents", ("napkin_a",)): (0, 8),
    ("filtered_conversations", ("napkin_a", "debate")): (8, 14),
    ("longest_conversations", ("napkin_a",)): (14, 20),
}
SPEC = """
name: napkin_mix
total_tokens: {total_tokens}
seed: 3
phases:
  - name: phase1
    fraction: 0.6
    sources:
      - name: raw_pages
        asset: raw_documents
        quality_tier: low
        share: 0.6
        max_epochs: 4
      - name: debates
        asset: filtered_conversations
        selection: {{styles: [debate]}}
        quality_tier: medium
        share: 0.4
        max_epochs: 4
  - name: phase2
    fraction: 0.4
    sources:
      - name: longest
        asset: longest_conversations
        quality_tier: high
        share: 0.7
        max_epochs: 4
      - name: raw_replay
        asset: raw_documents
        quality_tier: low
        share: 0.3
        max_epochs: 4
"""


def write_sources(data_dir: Path, count) -> dict[str, int]:
    """Parquet partitions of napkin text; tokens per asset."""
    sections = napkin_sections(20)
    tokens = {}
    for (asset, dims), (start, stop) in SLICES.items():
        part = sections[start:stop]
        id_column = "doc_id" if asset == "raw_documents" else "conversation_id"
        path = asset_path(data_dir, asset, *dims)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({id_column: [s["id"] for s in part], "text": [s["text"] for s in part]})
        pq.write_table(table, path)
        tokens[asset] = sum(count([s["text"] for s in part]))
    return tokens


@pytest.fixture(scope="module")
def blend(tmp_path_factory):
    """The blend built, its manifest written, and both formats exported through the CLI."""
    root = tmp_path_factory.mktemp("blend")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIND_DATA_DIR", str(root / "data"))
        mp.setenv("MIND_MODELS_DIR", str(MODELS_DIR))
        settings = get_settings()
        llm = LLMResource.from_settings(settings)
        model_path = llm.model_path()
        count = token_counter(model_path)
        tokenizer = HFTokenizer(llm.model_name, model_path)
        available = write_sources(settings.data_dir, count)
        # Phase 2's longest source needs 1.5 passes over its rows: whole repeats and a subset.
        total = int(1.5 * available["longest_conversations"] / (0.4 * 0.7))
        spec_path = root / f"{BLEND}.yaml"
        spec_path.write_text(SPEC.format(total_tokens=total))
        manifest = build_manifest(
            load_blend_spec(spec_path),
            spec_path,
            settings.data_dir,
            known={"shard": ["napkin_a"]},
            tokens=TokenCache(settings.data_dir, tokenizer, workers=1),
            lookup=lambda asset, partition: {"run_id": None, "data_version": None},
        )
        write_manifest(settings, manifest)
        assert mind_cli(["export-blend", BLEND, "--format", "megatron"]) == 0
        assert mind_cli(["export-blend", BLEND]) == 0
        exports = settings.data_dir / "blend_exports" / BLEND
        yield SimpleNamespace(
            settings=settings,
            manifest=manifest,
            parquet=exports,
            megatron=exports / "megatron",
            tokenizer=load_tokenizer(model_path),
            blend_tokenizer=tokenizer,
            model_path=model_path,
            model_name=llm.model_name,
            root=root,
        )


def parquet_rows(blend, phase: str) -> list[dict]:
    rows = pq.read_table(blend.parquet / phase).to_pylist()
    return sorted(rows, key=lambda r: int(r["row_id"].rsplit(":", 1)[1]))


def data_path(directory: Path, phase: str) -> tuple[list[str], list[float]]:
    """The list file parsed exactly as Megatron-LM parses --data-args-path."""
    prefixes, weights = get_blend_from_list(
        (directory / f"{phase}.data-path.txt").read_text().split()
    )
    return prefixes, weights


def documents(directory: Path, prefix: str) -> list[np.ndarray]:
    dataset = IndexedDataset(str(directory / prefix))
    # Copies: megatron-core's arrays view its mmap, which closes with the dataset.
    return [np.array(dataset[i]) for i in range(len(dataset))]


def as_text(ids: np.ndarray) -> str:
    """Token ids as a string, one character per token, for exact subsequence checks."""
    return "".join(map(chr, ids.astype(np.int64) + 256))


def test_the_blend_covers_repeats_and_fractional_passes(blend):
    epochs = {s.name: s.epochs for p in blend.manifest.phases for s in p.sources}
    assert epochs["longest"] == pytest.approx(1.5, abs=1e-3)
    assert {r["epoch"] for r in parquet_rows(blend, "phase2") if r["source"] == "longest"} == {0, 1}
    assert any(e < 1 for e in epochs.values())
    assert not any(s.capped for p in blend.manifest.phases for s in p.sources)


def test_every_prefix_loads_in_megatron_core_and_holds_the_parquet_rows(blend):
    eod = blend.tokenizer.eos_token_id
    summary = json.loads((blend.megatron / "export.json").read_text())
    assert summary["eod_token_id"] == eod and summary["dtype"] == "uint16"
    for phase in blend.manifest.phases:
        rows = parquet_rows(blend, phase.name)
        texts = {r["text"] for r in rows}
        lineage = pq.read_table(blend.megatron / phase.name / "documents.parquet").to_pylist()
        prefixes, _ = data_path(blend.megatron, phase.name)
        assert prefixes == [megatron_prefix(phase.name, s.name) for s in phase.sources]
        for source, prefix in zip(phase.sources, prefixes, strict=True):
            docs = documents(blend.megatron, prefix)
            expected = [r for r in rows if r["source"] == source.name]
            assert len(docs) == len(expected) > 0
            mapped = [d for d in lineage if d["prefix"] == prefix]
            for n, (ids, row, link) in enumerate(zip(docs, expected, mapped, strict=True)):
                # Each document is one sequence: its tokens, then exactly one eod.
                assert ids[-1] == eod and eod not in ids[:-1]
                text = blend.tokenizer.decode(ids[:-1].tolist())
                assert text in texts
                # ...and it is the source's n-th row in the parquet export's training order.
                assert text == row["text"]
                assert (link["document"], link["row_id"]) == (n, row["row_id"])
                assert link["source_row_id"] == row["source_row_id"]
        # Same rows in both formats: every parquet row is one Megatron document.
        assert sorted(d["row_id"] for d in lineage) == sorted(r["row_id"] for r in rows)


def test_weights_and_token_counts_match_the_manifest(blend):
    """Token rule: a prefix's .idx sequence lengths sum to the parquet export's n_tokens over the
    rows of that (phase, source), plus one eod token per row."""
    summary = json.loads((blend.megatron / "export.json").read_text())
    for phase in blend.manifest.phases:
        rows = parquet_rows(blend, phase.name)
        prefixes, weights = data_path(blend.megatron, phase.name)
        assert weights == pytest.approx([s.weight for s in phase.sources], rel=1e-5)
        assert sum(weights) == pytest.approx(1, abs=1e-5)
        # The manifest's list is the export's list, byte for byte.
        listed = (manifest_dir(blend.settings, BLEND) / f"{phase.name}.megatron.txt").read_text()
        assert listed == (blend.megatron / f"{phase.name}.data-path.txt").read_text()
        for source, prefix, entry in zip(
            phase.sources, prefixes, summary["phases"][phase.name]["datasets"], strict=True
        ):
            picked = [r for r in rows if r["source"] == source.name]
            dataset = IndexedDataset(str(blend.megatron / prefix))
            in_idx = int(dataset.sequence_lengths.sum())  # read while the dataset's mmap is open
            assert len(dataset) == len(dataset.document_indices) - 1 == len(picked)
            assert in_idx == sum(r["n_tokens"] for r in picked) + len(picked)
            assert entry["tokens"] == in_idx and entry["prefix"] == prefix
            del dataset
            # Whole rows land as close to the manifest's token target as rows allow.
            biggest = max(r["n_tokens"] for r in picked)
            assert abs(sum(r["n_tokens"] for r in picked) - source.tokens) <= biggest


# SmolLM2's pad token is its eos; megatron-core notices, warns, and masks no pad tokens.
@pytest.mark.filterwarnings("ignore:The pad token id in the tokenizer collides")
def test_blended_gpt_dataset_reads_a_moved_export(blend, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "napkin_mix"
    shutil.copytree(blend.megatron, moved)
    # A one-process group, as a single-rank Megatron-LM run has: the blended dataset saves its
    # indices to the cache from rank 0. When the session's in-process vLLM engine has already
    # started one (world size 1), megatron-core reads through that one instead.
    own_group = not torch.distributed.is_initialized()
    if own_group:
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
        )
    assert torch.distributed.get_world_size() == 1
    # The original is out of reach while the copy is read, so nothing can resolve to it.
    hidden = blend.megatron.rename(blend.root / "hidden")
    try:
        # Prefixes are relative to the export directory, so a trainer runs from there.
        monkeypatch.chdir(moved)
        check_blended_gpt_dataset(moved, blend.tokenizer, tmp_path / "cache")
    finally:
        hidden.rename(blend.megatron)
        if own_group:
            torch.distributed.destroy_process_group()


def blended_train_dataset(
    export: Path, hf_tokenizer, cache: Path, *, samples: int, sequence_length: int
) -> tuple[BlendedDataset, list[str], list[float]]:
    """Phase 1 of a Megatron export as Megatron-LM's pretraining reads it: the tokenizer saved in
    the export (checked against `hf_tokenizer`), the data-path list, `samples` training samples
    of `sequence_length` tokens. Returns the dataset, the prefixes and their weights."""
    tokenizer = MegatronTokenizer.from_pretrained(
        str(export / "tokenizer"), metadata_path={"library": "huggingface"}
    )
    assert tokenizer.eod == hf_tokenizer.eos_token_id
    assert tokenizer.vocab_size == len(hf_tokenizer)
    prefixes, weights = data_path(export, "phase1")
    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=sequence_length,
        blend=(prefixes, weights),
        split="100,0,0",
        tokenizer=tokenizer,
        reset_position_ids=True,
        reset_attention_mask=True,
        eod_mask_loss=False,
        path_to_cache=str(cache),
    )
    train, valid, test = BlendedMegatronDatasetBuilder(
        GPTDataset, [samples, 0, 0], lambda: True, config
    ).build()
    assert isinstance(train, BlendedDataset) and valid is None and test is None
    return train, prefixes, weights


def check_blended_gpt_dataset(moved: Path, hf_tokenizer, cache: Path) -> None:
    eod = hf_tokenizer.eos_token_id
    samples = 64
    train, prefixes, weights = blended_train_dataset(
        moved, hf_tokenizer, cache, samples=samples, sequence_length=128
    )
    bodies = {
        i: [as_text(doc[:-1]) for doc in documents(moved, prefix)]
        for i, prefix in enumerate(prefixes)
    }
    drawn = np.zeros(len(prefixes))
    crossings = 0  # samples that span a document boundary
    for index in range(samples):
        sample = train[index]
        dataset_id = int(sample["dataset_id"])
        drawn[dataset_id] += 1
        tokens = np.append(sample["tokens"].numpy(), sample["labels"].numpy()[-1])
        assert len(tokens) == 129
        # A sample is a window over that dataset's documents joined by eod: the pieces between
        # eod tokens are whole documents, the first a document's end, the last its beginning.
        pieces = [as_text(p) for p in np.split(tokens, np.flatnonzero(tokens == eod))]
        pieces = [p[1:] if n else p for n, p in enumerate(pieces)]  # drop the leading eod
        docs = bodies[dataset_id]
        if len(pieces) == 1:
            assert any(pieces[0] in d for d in docs)
            continue
        crossings += 1
        assert any(d.endswith(pieces[0]) for d in docs)
        assert all(p in docs for p in pieces[1:-1])
        assert any(d.startswith(pieces[-1]) for d in docs)
    assert crossings > 0 and drawn.min() > 0
    # Megatron's blending follows the list's weights sample by sample.
    assert np.all(np.abs(drawn - np.array(weights) / sum(weights) * samples) <= 1.0)


def release(blend, out: Path, *, formats=("megatron",), tokenizer=None, manifest=None):
    """Export `blend` (or `manifest`) to `out` through the one export path."""
    return write_release(
        ReleaseRequest(
            manifest or blend.manifest,
            out,
            blend.settings.data_dir,
            formats,
            BlendSettings(export_workers=1),
            (),
            tokenizer or blend.blend_tokenizer,
        )
    )


def test_failed_export_leaves_the_previous_one_in_place(blend, monkeypatch):
    """A crash while the last phase of the Megatron datasets is written leaves every file of
    the export in place, both formats, byte for byte, and no staging directory behind."""
    before = {
        p.relative_to(blend.parquet): p.read_bytes()
        for p in blend.parquet.rglob("*")
        if p.is_file()
    }
    last = blend.manifest.phases[-1].name
    write_table = pq.write_table

    def broken(table, where, **kwargs):
        if f"/{last}/" in str(where):
            raise RuntimeError("disk full")
        return write_table(table, where, **kwargs)

    monkeypatch.setattr("mind_assets.lib.storage.pq.write_table", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        release(blend, blend.parquet, formats=("parquet", "megatron"))
    after = {
        p.relative_to(blend.parquet): p.read_bytes()
        for p in blend.parquet.rglob("*")
        if p.is_file()
    }
    assert after == before
    assert [p.name for p in blend.parquet.parent.iterdir() if p.name.startswith(".")] == []


def test_bad_input_fails_naming_what_is_wrong(blend, tmp_path):
    out = tmp_path / "export"
    with pytest.raises(ExportError, match=r"counted tokens with .*SmolLM2.*fingerprint .*'words'"):
        release(blend, out, tokenizer=WordTokenizer())

    # The manifest's tokenizer, as far as its fingerprint tells, but without an eos token.
    no_eos = WordTokenizer(
        name="no-eos-tokenizer", fingerprint=blend.manifest.tokenizer_sha256, eos_id=None
    )
    with pytest.raises(ExportError, match=r"'no-eos-tokenizer' has no eos token"):
        release(blend, out, tokenizer=no_eos)

    moved = manifest_from_json(json.loads(json.dumps(blend.manifest.to_json())))
    missing = tmp_path / "gone" / "napkin_a.parquet"
    moved.phases[0].sources[0].files[0].path = str(missing)
    with pytest.raises(ExportError, match=rf"raw_pages.*missing on disk: {missing}"):
        release(blend, out, manifest=moved)
    moved.phases[0].sources[0].name = "raw pages"
    with pytest.raises(ExportError, match=r"phase 'phase1': name 'raw pages'"):
        release(blend, out, manifest=moved)
    assert not out.exists()


def test_a_source_file_changed_since_the_manifest_stops_both_exports(blend, capsys):
    """A regenerated partition under a pinned manifest is an error naming the file, and the
    exports already written stay as they were."""
    source = asset_path(blend.settings.data_dir, "filtered_conversations", "napkin_a", "debate")
    original = source.read_bytes()
    exports = sorted(p for p in blend.parquet.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in exports}
    table = pq.read_table(source)
    pq.write_table(table.slice(1), source)  # one row fewer, as a regeneration might leave
    try:
        for fmt in ("parquet", "megatron"):
            capsys.readouterr()
            assert mind_cli(["export-blend", BLEND, "--format", fmt]) == 2
            error = capsys.readouterr().err
            assert f"source 'debates': {source} changed since the manifest was built" in error
    finally:
        source.write_bytes(original)
    assert {p: p.read_bytes() for p in exports} == before


def test_a_moved_data_root_exports_audits_and_traces_the_same(blend, tmp_path, monkeypatch, capsys):
    """Manifests and exports record paths relative to the data root: a copy of the whole data
    root elsewhere, with the original out of reach, re-exports byte-identically, audits and
    traces."""
    manifest = json.loads((manifest_dir(blend.settings, BLEND) / "manifest.json").read_text())
    paths = [f["path"] for p in manifest["phases"] for s in p["sources"] for f in s["files"]]
    assert paths and not any(Path(path).is_absolute() for path in paths)
    exported = parquet_rows(blend, "phase2")
    assert not any(Path(r["source_file"]).is_absolute() for r in exported)

    moved = tmp_path / "mounted" / "data"
    shutil.copytree(blend.settings.data_dir, moved)
    hidden = blend.settings.data_dir.rename(blend.root / "data-hidden")
    try:
        monkeypatch.setenv("MIND_DATA_DIR", str(moved))
        before = {
            p.relative_to(moved): p.read_bytes()
            for p in (moved / "blend_exports").rglob("*.parquet")
        }
        assert mind_cli(["export-blend", BLEND]) == 0
        assert mind_cli(["export-blend", BLEND, "--format", "megatron"]) == 0
        after = {
            p.relative_to(moved): p.read_bytes()
            for p in (moved / "blend_exports").rglob("*.parquet")
        }
        assert after == before
        row = next(r for r in exported if r["source_asset"] == "raw_documents")
        capsys.readouterr()
        assert mind_cli(["trace", row["row_id"]]) == 0
        traced = capsys.readouterr().out
        assert "== raw_document ==" in traced and json.dumps(row["text"])[1:120] in traced
        assert mind_cli(["audit-blend", BLEND]) == 0
        audit = capsys.readouterr().out
        assert f"blend {BLEND}" in audit and "phase2/raw_replay" in audit
    finally:
        hidden.rename(blend.settings.data_dir)


def test_megatron_documents_trace_to_their_source_with_the_megatron_export_beside(blend):
    lineage = pq.read_table(blend.megatron / "phase2" / "documents.parquet").to_pylist()
    document = next(d for d in lineage if d["prefix"] == "phase2/raw_replay")
    ancestry = trace_row(document["row_id"], blend.settings.data_dir)
    assert ancestry["exported_row"]["source_row_id"] == document["source_row_id"]
    ids = documents(blend.megatron, document["prefix"])[document["document"]]
    assert blend.tokenizer.decode(ids[:-1].tolist()) == ancestry["raw_document"]["text"]
