"""A blend counted and encoded with the trainer's tokenizer, not the teacher's, with the real
engine on ../shared/data: the spec names a tokenizer of its own (byte-level BPE trained on the
napkin sections, `student_tokenizer.py`); the manifest's token counts, the parquet export's
`n_tokens` and the Megatron ids are that tokenizer's; megatron-core's
`BlendedMegatronDatasetBuilder` reads the export with the tokenizer saved in it, and its samples
decode, with that tokenizer, to the exported documents."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from dagster import MultiPartitionKey
from transformers import AutoTokenizer

from mind_assets.blends.assets import blend_export, blend_manifest
from mind_assets.blends.families import BLEND_SOURCES
from mind_assets.blends.versions import BlendRef, load_manifest_version
from mind_assets.conversations.assets import conversations, mind_prompts
from mind_assets.conversations.styles import CONVERSATION_STYLE_KEYS
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.filtering.assets import filtered_conversations
from mind_assets.lib.storage import blend_export_dir
from mind_assets.lib.tokenizer import HFTokenizer
from mind_assets.settings import PROJECT_DIR
from mind_assets_tests.conftest import WORLD_SHARD, world_shard
from mind_assets_tests.student_tokenizer import write_student_tokenizer
from mind_assets_tests.test_e2e_filtering import LENIENT_PROFILE
from mind_assets_tests.test_megatron_export import blended_train_dataset, documents

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex.*")
    from megatron.core.tokenizers import MegatronTokenizer

pytestmark = pytest.mark.engine

BLEND = "raw_and_conversations"  # the shipped spec, copied with a tokenizer line added


def spec_with_student_tokenizer(blends_dir):
    """The shipped spec in a blends folder of its own, naming a tokenizer directory beside it."""
    blends_dir.mkdir()
    for spec in (PROJECT_DIR / "blends").glob("*.yaml"):
        shutil.copy(spec, blends_dir / spec.name)
    path = blends_dir / f"{BLEND}.yaml"
    path.write_text(path.read_text() + "tokenizer: student\n")
    return write_student_tokenizer(blends_dir / "student")


def test_a_blend_is_counted_and_encoded_with_the_tokenizer_its_spec_names(
    napkin_world, settings, llm, run, register, monkeypatch, tmp_path
):
    student_dir = spec_with_student_tokenizer(tmp_path / "blends")
    monkeypatch.setenv("MIND_BLENDS_DIR", str(tmp_path / "blends"))
    for name, value in LENIENT_PROFILE.items():  # keep some of the 135M model's conversations
        monkeypatch.setenv(f"MIND_FILTERS__{name}", value)
    monkeypatch.setenv("MIND_BLENDS__EXPORT_FORMATS", '["parquet", "megatron"]')
    napkin_world.copy_generations(settings.data_dir)
    register(world_shard())
    run([mind_prompts])
    run([raw_documents, chunks], WORLD_SHARD)
    for style in CONVERSATION_STYLE_KEYS:
        key = MultiPartitionKey({"shard": WORLD_SHARD, "style": style})
        run([conversations], key)
        run([filtered_conversations], key, raise_on_error=False)
    assert run([blend_manifest], BLEND).success
    assert run([blend_export], BLEND).success

    student = AutoTokenizer.from_pretrained(str(student_dir))
    teacher = AutoTokenizer.from_pretrained(llm.model_path())
    manifest = load_manifest_version(settings.data_dir, BlendRef.parse(BLEND))
    assert manifest.tokenizer == "student"
    assert manifest.tokenizer_sha256 == HFTokenizer("student", str(student_dir)).fingerprint
    assert manifest.tokenizer_sha256 != HFTokenizer("teacher", llm.model_path()).fingerprint

    # Every pinned file's tokens are the student's count of its blended text, not the teacher's.
    files = [f for phase in manifest.phases for s in phase.sources for f in s.files]
    assert {f.asset for f in files} == {"raw_documents", "filtered_conversations"}
    differs = 0
    for f in files:
        texts = pq.read_table(f.resolve(settings.data_dir))[
            BLEND_SOURCES[f.asset].text_column
        ].to_pylist()
        counted = sum(len(ids) for ids in student(texts, add_special_tokens=False)["input_ids"])
        assert f.tokens == counted, f.path
        by_teacher = teacher(texts, add_special_tokens=False)["input_ids"]
        differs += counted != sum(map(len, by_teacher))
    assert differs == len(files)

    # The parquet export's n_tokens and the Megatron documents are the student's encoding of
    # each exported text, followed by the student's end-of-document token.
    export = blend_export_dir(settings.data_dir, BLEND)
    rows = {r["row_id"]: r for r in pq.read_table(export / "phase1").to_pylist()}
    megatron = export / "megatron"
    saved = AutoTokenizer.from_pretrained(str(megatron / "tokenizer"))
    assert (
        HFTokenizer("saved", str(megatron / "tokenizer")).fingerprint == manifest.tokenizer_sha256
    )
    eod = student.eos_token_id
    mapping = pq.read_table(megatron / "phase1" / "documents.parquet").to_pylist()
    assert {m["row_id"] for m in mapping} == set(rows)
    by_prefix: dict[str, list[np.ndarray]] = {}
    exported_texts = set()
    for entry in mapping:
        prefix = entry["prefix"]
        if prefix not in by_prefix:
            by_prefix[prefix] = documents(megatron, prefix)
        ids = by_prefix[prefix][entry["document"]]
        row = rows[entry["row_id"]]
        assert ids[-1] == eod and len(ids) - 1 == row["n_tokens"] == entry["n_tokens"]
        assert ids[:-1].tolist() == student(row["text"], add_special_tokens=False)["input_ids"]
        assert saved.decode(ids[:-1].tolist()) == row["text"]
        exported_texts.add(row["text"])

    # megatron-core reads the export with the tokenizer it holds; every whole document inside a
    # sample decodes to an exported text.
    own_group = not torch.distributed.is_initialized()
    if own_group:
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
        )
    monkeypatch.chdir(megatron)  # the list's prefixes are relative to the export
    try:
        samples = 32
        train, _, _ = blended_train_dataset(
            megatron, student, tmp_path / "megatron-cache", samples=samples, sequence_length=256
        )
        detokenize = MegatronTokenizer.from_pretrained(
            str(megatron / "tokenizer"), metadata_path={"library": "huggingface"}
        ).detokenize
        whole = 0
        for index in range(samples):
            sample = train[index]
            tokens = np.append(sample["tokens"].numpy(), sample["labels"].numpy()[-1])
            pieces = np.split(tokens, np.flatnonzero(tokens == eod))
            for piece in pieces[1:-1]:  # between two eods: a whole document
                assert detokenize(piece[1:].tolist()) in exported_texts
                whole += 1
        assert whole > 0
    finally:
        if own_group:
            torch.distributed.destroy_process_group()
