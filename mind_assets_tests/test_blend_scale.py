"""The blend path at scale, on real napkin text: the spec's tokenizer counts and encodes, every
file is tokenized once into the token cache, the export is one streaming pass whose parts can
be written apart (in a pool, in separate steps) and give the same bytes, and what a killed
export leaves behind is garbage `mind gc` finds."""

from __future__ import annotations

import json
import pickle
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from dagster import execute_job, instance_for_test, reconstructable

from mind_assets.blends import tokens as token_module
from mind_assets.blends.export import ExportError
from mind_assets.blends.manifest import ResolvedFile, ResolvedPhase, ResolvedSource, build_manifest
from mind_assets.blends.plan import plan_phase, sample_rows
from mind_assets.blends.release import (
    ReleaseRequest,
    finish_release_parts,
    write_release,
    write_release_parts,
)
from mind_assets.blends.spec import load_blend_spec
from mind_assets.blends.tokens import CountedFile, TokenCache
from mind_assets.blends.versions import save_manifest_version
from mind_assets.corpus.outputs import RAW_DOCUMENTS
from mind_assets.lib import storage
from mind_assets.lib.progress import Progress
from mind_assets.lib.spill import Spill
from mind_assets.lib.tokenizer import EncodingPool, HFTokenizer, TokenizerError, resolve_tokenizer
from mind_assets.settings import BlendSettings
from mind_assets_tests.blend_helpers import WordTokenizer, word_tokens, words
from mind_assets_tests.conftest import NAPKIN
from mind_assets_tests.partitioned_export_job import partitioned_export_job
from mind_assets_tests.student_tokenizer import write_student_tokenizer

SECTIONS = [json.loads(line) for line in NAPKIN.open()][:48]
UNKNOWN = {"run_id": None, "data_version": None}
SPEC = """
name: {name}
total_tokens: {total}
seed: 5
tokenizer: {tokenizer}
phases:
  - name: broad
    fraction: 0.7
    sources:
      - {{name: pages, asset: raw_documents, quality_tier: low, share: 1.0, max_epochs: 3}}
  - name: focused
    fraction: 0.3
    sources:
      - {{name: first_shard, asset: raw_documents, selection: {{shards: [s0]}},
          quality_tier: high, share: 0.6, max_epochs: 3}}
      - {{name: second_shard, asset: raw_documents, selection: {{shards: [s1]}},
          quality_tier: high, share: 0.4, max_epochs: 3}}
"""


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """The trainer's tokenizer directory (not the engine's)."""
    return write_student_tokenizer(tmp_path_factory.mktemp("student"))


def write_raw_shards(data_dir: Path) -> dict[str, list[str]]:
    """Two raw_documents partitions of napkin sections, written as versions."""
    for shard, part in (("s0", SECTIONS[:30]), ("s1", SECTIONS[30:])):
        rows = [
            {
                "doc_id": s["id"],
                "source": f"sections.jsonl#{n}",
                "url": s["url"],
                "title": s["title"],
                "text": s["text"],
                "n_chars": len(s["text"]),
                "sha256": storage.sha256_text(s["text"]),
            }
            for n, s in enumerate(part)
        ]
        table = pa.Table.from_pylist(rows, schema=RAW_DOCUMENTS.schema)
        path = RAW_DOCUMENTS.path(data_dir, {"shard": shard})
        storage.write_parquet_version(table, path)
    return {"shard": ["s0", "s1"]}


def build(data_dir: Path, spec_dir: Path, tokens: TokenCache, name: str = "scale", total=40_000):
    spec_path = spec_dir / f"{name}.yaml"
    spec_path.write_text(SPEC.format(name=name, total=total, tokenizer=tokens.tokenizer.name))
    manifest = build_manifest(
        load_blend_spec(spec_path),
        spec_path,
        data_dir,
        known={"shard": ["s0", "s1"]},
        tokens=tokens,
        lookup=lambda asset, partition: UNKNOWN,
    )
    save_manifest_version(data_dir, manifest)
    return manifest


def tree(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# --- the plan --------------------------------------------------------------------------------
def row_by_row(tokens_per_source: list[list[int]], targets: list[float], seed: str):
    """The sampler written the plain way, row by row: whole passes, then a shuffled remainder
    while tokens are wanted; then all sources shuffled together."""
    rng = random.Random(seed)
    mixed = []
    for source, (tokens, target) in enumerate(zip(tokens_per_source, targets, strict=True)):
        if not tokens or target <= 0:
            continue
        per_pass = sum(tokens)
        passes = int(target // per_pass) if per_pass else 0
        mixed += [(source, row, epoch) for epoch in range(passes) for row in range(len(tokens))]
        remaining = target - passes * per_pass
        order = list(range(len(tokens)))
        rng.shuffle(order)
        for row in order:
            if remaining <= 0:
                break
            mixed.append((source, row, passes))
            remaining -= tokens[row]
    rng.shuffle(mixed)
    return mixed


def test_the_plan_draws_exactly_what_the_row_by_row_sampler_draws():
    gen = np.random.default_rng(0)
    counts = [list(gen.integers(0, 900, size=n)) for n in (37, 5, 0, 120)]
    targets = [2.6 * sum(counts[0]), 0.0, 10.0, 0.35 * sum(counts[3])]
    sources = [
        ResolvedSource(f"s{i}", "raw_documents", "low", 0.25, 4, [], [], tokens=t)
        for i, t in enumerate(targets)
    ]
    # Each source's rows split over two files, as shards are.
    for source, tokens in zip(sources, counts, strict=True):
        half = len(tokens) // 2
        for part in (tokens[:half], tokens[half:]):
            source.files.append(ResolvedFile("raw_documents", "x", "x", "x", len(part), 0))
            source.files[-1].counts = np.asarray(part, dtype=np.int64)
    phase = ResolvedPhase("p", 1.0, sources)
    manifest = SimpleNamespace(seed=7, blend="b")
    plan = plan_phase(manifest, phase, lambda f: f.counts, part_rows=50, shard_rows=20)
    expected = row_by_row(counts, targets, "7:b:p")
    got = []
    for s, f, r, e in zip(plan.source, plan.file, plan.row, plan.epoch, strict=True):
        half = len(counts[s]) // 2
        got.append((int(s), int(r) + (half if f == 1 else 0), int(e)))
    assert got == expected and len(got) > 100
    assert {e for s, _, e in got if s == 0} == {0, 1, 2}  # whole passes and a remainder
    # Parts of whole shards (50 rows rounded down to 2 shards of 20), end to end.
    starts, ends = zip(*plan.parts, strict=True)
    assert starts[0] == 0 and ends[-1] == plan.rows and list(starts[1:]) == list(ends[:-1])
    assert all(b - a == 40 for a, b in plan.parts[:-1]) and len(plan.parts) > 2


def test_sampling_stops_as_soon_as_the_target_is_met():
    rows, epochs = sample_rows(np.array([5, 5, 5]), 31.0, random.Random(1))
    assert len(rows) == 7 and list(epochs) == [0, 0, 0, 1, 1, 1, 2]  # 2 passes, 1 row more
    rows, epochs = sample_rows(np.array([5, 5, 5]), 11.0, random.Random(1))
    assert len(rows) == 3 and set(epochs) == {0}  # 11 wanted: 5, 5, and one more for the 1
    assert len(sample_rows(np.array([5, 5, 5]), 0.0, random.Random(1))[0]) == 0


# --- the token cache -------------------------------------------------------------------------
class CountingWords(WordTokenizer):
    calls: list[int] = []  # noqa: RUF012 - shared on purpose: counts every instance's encodes

    def encode(self, texts):
        CountingWords.calls.append(len(texts))
        return super().encode(texts)


def test_a_rebuild_reads_counts_and_encodes_only_what_changed(tmp_path):
    data_dir = tmp_path / "data"
    write_raw_shards(data_dir)
    tokens = TokenCache(data_dir, CountingWords(), workers=1)
    CountingWords.calls.clear()
    first = build(data_dir, tmp_path, tokens)
    assert sum(CountingWords.calls) == len(SECTIONS)  # each file once, not once per source
    files = {f.partition: f for p in first.phases for s in p.sources for f in s.files}
    assert files["s0"].tokens == sum(words([s["text"] for s in SECTIONS[:30]]))
    assert first.tokenizer == "words" and first.tokenizer_sha256 == "words-v1"

    CountingWords.calls.clear()
    build(data_dir, tmp_path, tokens)
    assert CountingWords.calls == []  # an unchanged corpus: counts only, no text read

    rows = storage.read_output(RAW_DOCUMENTS.path(data_dir, {"shard": "s1"})).slice(0, 5)
    storage.write_parquet_version(rows, RAW_DOCUMENTS.path(data_dir, {"shard": "s1"}))
    build(data_dir, tmp_path, tokens)
    assert sum(CountingWords.calls) == 5  # only the regenerated partition


def test_the_pool_encodes_what_one_process_encodes(tmp_path, student, monkeypatch):
    tokenizer = HFTokenizer("student", str(student))
    texts = [s["text"] for s in SECTIONS]
    batches = [texts[i : i + 7] for i in range(0, len(texts), 7)]
    with EncodingPool(tokenizer, 1) as here, EncodingPool(tokenizer, 2) as pool:
        alone = list(here.map(batches))
        pooled = list(pool.map(batches))
    for (la, ia), (lp, ip) in zip(alone, pooled, strict=True):
        assert np.array_equal(la, lp) and np.array_equal(ia, ip)
    # The cache written through the pool is the cache written here.
    data_dir = tmp_path / "data"
    write_raw_shards(data_dir)
    path = storage.current_version(RAW_DOCUMENTS.path(data_dir, {"shard": "s0"}))
    counted = CountedFile(path, storage.sha256_file(path), "text")
    monkeypatch.setattr(token_module, "POOL_MIN_ROWS", 0)
    monkeypatch.setattr(token_module, "ENCODE_BATCH", 4)
    TokenCache(data_dir, tokenizer, workers=2).fill([counted])
    pooled_cache = storage.read_output(TokenCache(data_dir, tokenizer, workers=1).file(counted))
    other = tmp_path / "other"
    write_raw_shards(other)
    path = storage.current_version(RAW_DOCUMENTS.path(other, {"shard": "s0"}))
    counted_here = CountedFile(path, counted.sha256, "text")
    TokenCache(other, tokenizer, workers=1).fill([counted_here])
    here_cache = storage.read_output(TokenCache(other, tokenizer, workers=1).file(counted_here))
    assert pooled_cache.equals(here_cache)
    expected = tokenizer.load()([t for t in texts[:30]], add_special_tokens=False)["input_ids"]
    assert pooled_cache["ids"].to_pylist() == expected


def test_a_worker_encodes_without_transformers(student):
    """The pool's workers rebuild the fast tokenizer from its definition with `tokenizers`
    alone: no transformers, no torch, in a fresh interpreter, and the same ids."""
    tokenizer = HFTokenizer("student", str(student))
    texts = [s["text"] for s in SECTIONS[:5]]
    script = (
        "import pickle, sys\n"
        "encoder = pickle.loads(sys.stdin.buffer.read())\n"
        f"lengths, ids = encoder({texts!r})\n"
        "assert 'transformers' not in sys.modules and 'torch' not in sys.modules\n"
        "print(lengths.tolist(), ids.tolist())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps(tokenizer.worker_encoder()),
        capture_output=True,
        check=True,
    )
    lengths, ids = tokenizer.encode(texts)
    assert done.stdout.decode().strip() == f"{lengths.tolist()} {ids.tolist()}"


def test_an_export_process_holds_neither_transformers_nor_torch(tmp_path, student):
    """A fresh process exports a blend in both formats with the student tokenizer: its facts
    come from a short child process, its ids from `tokenizers`, its .bin/.idx from the
    platform's own writer, so neither transformers nor the torch it imports (about 500 MB) is
    ever loaded there; and the facts are the ones transformers gives in this process."""
    data_dir = tmp_path / "data"
    write_raw_shards(data_dir)
    tokenizer = HFTokenizer(str(student), str(student))
    manifest = build(data_dir, tmp_path, TokenCache(data_dir, tokenizer, workers=1))
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from mind_assets.blends.release import ReleaseRequest, write_release\n"
        "from mind_assets.blends.versions import BlendRef, load_manifest_version\n"
        "from mind_assets.lib.tokenizer import HFTokenizer\n"
        "from mind_assets.settings import BlendSettings\n"
        "data, ref, path, out = sys.argv[1:]\n"
        "tokenizer = HFTokenizer(path, path)\n"
        "manifest = load_manifest_version(Path(data), BlendRef.parse(ref))\n"
        "write_release(ReleaseRequest(manifest, Path(out), Path(data), ['parquet', 'megatron'],\n"
        "    BlendSettings(export_workers=1), (), tokenizer))\n"
        "eos = tokenizer.eos_id\n"
        "print(json.dumps([sorted(m for m in ('transformers', 'torch') if m in sys.modules),\n"
        "    tokenizer.fingerprint, tokenizer.vocab_size, eos, tokenizer.id_to_token(eos)]))\n"
    )
    out = tmp_path / "export"
    done = subprocess.run(
        [sys.executable, "-c", script, str(data_dir), manifest.ref, str(student), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded, fingerprint, vocab_size, eos, eos_token = json.loads(done.stdout.splitlines()[-1])
    assert loaded == []
    here = tokenizer.load()  # transformers, in this process
    assert fingerprint == manifest.tokenizer_sha256
    assert (vocab_size, eos) == (len(here), here.eos_token_id)
    assert eos_token == here.convert_ids_to_tokens(here.eos_token_id)
    saved = HFTokenizer("saved", str(out / "megatron" / "tokenizer"))
    assert saved.load().get_vocab() == here.get_vocab() and saved.fingerprint == fingerprint
    assert json.loads((out / "megatron" / "export.json").read_text())["eod_token"] == eos_token


def test_a_tokenizer_that_does_not_load_in_the_child_process_is_named(tmp_path, monkeypatch):
    """Where transformers is not loaded, the facts come from a child process; its failure is
    the same clear error, naming the tokenizer and the child's reason."""
    monkeypatch.delitem(sys.modules, "transformers")
    empty = tmp_path / "not-a-tokenizer"
    empty.mkdir()
    reason = r"'not-a-tokenizer' \(the directory .*\) does not load"
    with pytest.raises(TokenizerError, match=reason):
        resolve_tokenizer(empty.name, engine_name="x", engine_path=str, base_dir=tmp_path)
    assert "transformers" not in sys.modules


# --- the export ------------------------------------------------------------------------------
def request(manifest, out: Path, data_dir: Path, tokenizer, **options) -> ReleaseRequest:
    settings = BlendSettings(export_workers=1, **options)
    return ReleaseRequest(manifest, out, data_dir, ["parquet", "megatron"], settings, (), tokenizer)


def test_parts_written_apart_give_the_bytes_of_one_pass(tmp_path, student, monkeypatch):
    data_dir = tmp_path / "data"
    write_raw_shards(data_dir)
    tokenizer = HFTokenizer(str(student), str(student))
    manifest = build(data_dir, tmp_path, TokenCache(data_dir, tokenizer, workers=1), total=90_000)
    small = {"export_shard_rows": 9, "export_part_rows": 20}

    one = write_release(request(manifest, tmp_path / "one", data_dir, tokenizer, **small))
    assert one.parquet.rows["broad"] > 40 and one.megatron.datasets["broad"] > 2
    listed = (tmp_path / "one" / "megatron" / "broad.data-path.txt").read_text().split()
    assert listed[1::2][:2] == ["broad/pages.00000", "broad/pages.00001"]
    assert sum(float(w) for w in listed[::2]) == pytest.approx(1.0, abs=1e-5)

    # With two workers, in one step.
    pooled = request(manifest, tmp_path / "pooled", data_dir, tokenizer, **small)
    pooled.options.export_workers = 2
    write_release(pooled)
    assert tree(tmp_path / "pooled") == tree(tmp_path / "one")

    # In two steps and a last one, as Dagster runs them; a step run again resumes.
    apart = request(manifest, tmp_path / "apart", data_dir, tokenizer, **small)
    with pytest.raises(ExportError, match=r"part 0 of phase 'broad' was not written"):
        finish_release_parts(apart)
    first = write_release_parts(apart, 0, 2)
    monkeypatch.setattr(
        "mind_assets.blends.release.write_part", lambda *a: pytest.fail("written again")
    )
    assert write_release_parts(apart, 0, 2) == first
    monkeypatch.undo()
    write_release_parts(apart, 1, 2)
    finish_release_parts(apart)
    assert tree(tmp_path / "apart") == tree(tmp_path / "one")
    assert not apart.parts_dir().exists()

    # One part per phase keeps one dataset per source, as exports always had.
    whole = write_release(request(manifest, tmp_path / "whole", data_dir, tokenizer))
    assert whole.megatron.datasets == {"broad": 1, "focused": 2}
    assert (tmp_path / "whole" / "megatron" / "broad" / "pages.bin").is_file()


def test_the_partitioned_export_runs_as_separate_dagster_steps(tmp_path, student, monkeypatch):
    """Two part steps in two processes (Dagster's multiprocess executor) and a last step: the
    bytes of the export written in one process."""
    data_dir = tmp_path / "data"
    blends_dir = tmp_path / "blends"
    blends_dir.mkdir()
    monkeypatch.setenv("MIND_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MIND_BLENDS_DIR", str(blends_dir))
    monkeypatch.setenv("MIND_BLENDS__EXPORT_FORMATS", '["parquet", "megatron"]')
    monkeypatch.setenv("MIND_BLENDS__EXPORT_SHARD_ROWS", "9")
    monkeypatch.setenv("MIND_BLENDS__EXPORT_PART_ROWS", "20")
    monkeypatch.setenv("MIND_BLENDS__EXPORT_WORKERS", "1")
    monkeypatch.setenv("MIND_BLENDS__EXPORT_STEPS", "2")
    write_raw_shards(data_dir)
    tokenizer = HFTokenizer(str(student), str(student))
    # "example" is a blend partition whichever blends folder a process sees.
    cache = TokenCache(data_dir, tokenizer, workers=1)
    manifest = build(data_dir, blends_dir, cache, "example", total=90_000)
    from mind_assets.blends.assets import write_manifest
    from mind_assets.settings import get_settings

    write_manifest(get_settings(), manifest)

    (tmp_path / "dagster").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = execute_job(
            reconstructable(partitioned_export_job),
            instance,
            tags={"dagster/partition": "example"},
        )
    assert result.success
    pids = {
        event.step_key: event.pid
        for event in result.all_events
        if event.event_type_value == "STEP_START"
    }
    assert set(pids) == {
        "blend_export.export_part_0",
        "blend_export.export_part_1",
        "blend_export.finish_export",
    }
    assert pids["blend_export.export_part_0"] != pids["blend_export.export_part_1"]
    [materialization] = result.asset_materializations_for_node("blend_export")
    one = write_release(
        request(
            manifest,
            tmp_path / "one",
            data_dir,
            tokenizer,
            export_shard_rows=9,
            export_part_rows=20,
        )
    )
    exported = storage.blend_export_dir(data_dir, "example")
    assert tree(exported) == tree(one.directory)
    assert materialization.metadata["rows"].value == sum(one.parquet.rows.values())


def test_an_export_refuses_a_tokenizer_other_than_the_manifests(tmp_path, student):
    data_dir = tmp_path / "data"
    write_raw_shards(data_dir)
    manifest = build(data_dir, tmp_path, word_tokens(data_dir))
    other = HFTokenizer(str(student), str(student))
    with pytest.raises(ExportError, match=r"counted tokens with 'words' .*fingerprint"):
        write_release(request(manifest, tmp_path / "out", data_dir, other))
    assert not (tmp_path / "out").exists()


def test_a_spec_names_its_tokenizer_by_directory_or_id(tmp_path, student, monkeypatch):
    # The Hub is off, here and in a child process: a machine without network would otherwise
    # spend most of a minute retrying the lookup of the id that does not exist.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    engine = tmp_path / "engine"  # never loaded: the spec names another
    relative = resolve_tokenizer(
        student.name,
        engine_name="teacher",
        engine_path=lambda: pytest.fail("the engine's tokenizer was loaded"),
        base_dir=student.parent,
    )
    assert relative.name == student.name and relative.path == str(student)
    with pytest.raises(
        TokenizerError, match=r"'no/such-tokenizer' \(no directory .* does not load"
    ):
        resolve_tokenizer(
            "no/such-tokenizer", engine_name="teacher", engine_path=str, base_dir=engine
        )


# --- what a killed export leaves -------------------------------------------------------------
def test_gc_finds_what_killed_exports_and_gone_versions_leave(tmp_path):
    data_dir = tmp_path / "data"
    write_raw_shards(data_dir)
    manifest = build(data_dir, tmp_path, word_tokens(data_dir))
    cache = word_tokens(data_dir)
    [s0] = [f for f in manifest.phases[1].sources[0].files]
    live = cache.file(CountedFile(s0.resolve(data_dir), s0.sha256, "text"))
    exports = storage.blend_exports_root(data_dir)
    staging = exports / ".scale.staging.x1"
    staging.mkdir(parents=True)
    parts = storage.export_parts_dir(data_dir, "scale", "v-1")
    parts.mkdir(parents=True)
    with storage.scratch_dir(data_dir) as scratch:
        left = {(g.kind, g.path) for g in storage.leftovers(data_dir, set(), 0)}
    assert ("export staging", staging) in left and ("export parts", parts) in left
    assert ("scratch", scratch) in left
    assert not any(kind == "token cache" for kind, _ in left)
    # The version goes (what `mind gc` does once no manifest pins it): its cache goes too.
    storage.delete_leftovers(
        [g for g in storage.leftovers(data_dir, set(), 0) if g.path == s0.resolve(data_dir)]
    )
    gone = {g.path for g in storage.leftovers(data_dir, set(), 0) if g.kind == "token cache"}
    assert gone == {live, live.with_suffix(".json")}


def test_spill_reads_each_bucket_back_in_order(tmp_path):
    gen = np.random.default_rng(3)
    positions = gen.permutation(500)
    schema = pa.schema([("position", pa.int64()), ("text", pa.string())])
    spill = Spill(tmp_path, schema, "position")
    for chunk in np.array_split(positions, 7):
        table = pa.table({"position": chunk, "text": [f"row {p}" for p in chunk]}, schema=schema)
        spill.add(chunk // 100, table)
    spill.close()
    for bucket in range(5):
        got = spill.read(bucket)
        assert got["position"].to_pylist() == list(range(bucket * 100, bucket * 100 + 100))
        assert got["text"][0].as_py() == f"row {bucket * 100}"
    assert spill.read(9).num_rows == 0 and not list(tmp_path.iterdir())


def test_progress_says_rows_tokens_rate_and_time_left():
    lines = []
    progress = Progress("exporting x@v", lines.append, total_rows=1000, every_s=0)
    progress.advance(250, 100_000)
    progress.finish()
    assert lines[0].startswith("exporting x@v: 250/1,000 rows (25%), 100,000 tokens, ")
    assert "tokens/s, about " in lines[0] and lines[0].endswith(" left")
    assert "(done in " in lines[-1]
