"""The blend path at pretraining scale: a raw-only blend over a generated math corpus (napkin
paragraphs recombined into documents of web-page length), its manifest built and exported in
both formats, against the single-pass baseline a careful engineer writes by hand: the same
documents, the same tokenizer (Hugging Face fast, batches of 1,024), megatron-core's
`IndexedDatasetBuilder`, one streaming pass, the same number of worker processes (as
megatron-core's `tools/preprocess_data.py` runs them).

Every configuration runs in its own process, one after another (the peak RSS is that process's
and its workers'). Measured for 100,000 documents with 1 and 2 workers, ours and the baseline;
then ours alone for 1,000,000 documents (about a billion tokens) with 2 workers, for time and
peak memory. A second baseline row encodes with the call our pipeline uses
(`encode_batch_fast`), so the pipeline's own cost is visible apart from the tokenizer call.
Writes the "blend_scale" section of RESULTS.md.

    python benchmarks/blend_scale.py [--docs 100000] [--big-docs 1000000] [--skip-big]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.data import NAPKIN  # noqa: E402
from benchmarks.results import RESULTS, replace_section  # noqa: E402

SHARDS = 4
BUDGET_SHARE = 0.645  # of the corpus's tokens, as the 60 M of 93.2 M
BENCH_DIR = Path(os.environ.get("MIND_BENCH_DIR", Path.home() / ".cache/mind-assets/bench"))
MODEL_DIR = Path(os.environ.get("MIND_TEST_MODELS_DIR", ROOT / "data" / "models"))
TOKENIZER = MODEL_DIR / "SmolLM2-135M-Instruct"
ENCODE_BATCH = 1024


# --- the corpus ----------------------------------------------------------------------------
def napkin_paragraphs() -> list[str]:
    paragraphs = []
    for line in NAPKIN.open():
        text = json.loads(line)["text"]
        paragraphs += [p for p in text.split("\n\n") if len(p.strip()) > 40]
    return paragraphs


def write_corpus(data_dir: Path, docs: int) -> dict:
    """`docs` documents of about 2,660 characters each (recombined napkin paragraphs, seeded),
    in SHARDS raw_documents partitions; returns their rows and characters."""
    import pyarrow as pa

    from mind_assets.corpus.outputs import RAW_DOCUMENTS
    from mind_assets.lib.storage import sha256_text, write_parquet_version

    marker = data_dir / "corpus.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    shutil.rmtree(data_dir, ignore_errors=True)
    paragraphs = napkin_paragraphs()
    rng = random.Random(0)
    per_shard = -(-docs // SHARDS)
    chars = 0
    for shard in range(SHARDS):
        rows = []
        for n in range(shard * per_shard, min(docs, (shard + 1) * per_shard)):
            parts, size = [], 0
            while size < 2660:
                parts.append(rng.choice(paragraphs))
                size += len(parts[-1]) + 2
            text = "\n\n".join(parts)
            chars += len(text)
            rows.append(
                {
                    "doc_id": f"doc-{n:08d}",
                    "source": f"generated#{n}",
                    "url": None,
                    "title": None,
                    "text": text,
                    "n_chars": len(text),
                    "sha256": sha256_text(text),
                }
            )
        table = pa.Table.from_pylist(rows, schema=RAW_DOCUMENTS.schema)
        write_parquet_version(table, RAW_DOCUMENTS.path(data_dir, {"shard": f"s{shard}"}))
    facts = {"docs": docs, "chars": chars}
    marker.write_text(json.dumps(facts))
    return facts


def source_files(data_dir: Path) -> list[Path]:
    from mind_assets.corpus.outputs import RAW_DOCUMENTS
    from mind_assets.lib.storage import current_version

    return [
        current_version(RAW_DOCUMENTS.path(data_dir, {"shard": f"s{n}"})) for n in range(SHARDS)
    ]


# --- the baseline --------------------------------------------------------------------------
_TOKENIZER: list = []


def _start(path: str, fast: bool) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from transformers import AutoTokenizer

    _TOKENIZER[:] = [AutoTokenizer.from_pretrained(path), fast]


def _encode(texts: list[str]) -> list[list[int]]:
    tokenizer, fast = _TOKENIZER
    if fast:
        encodings = tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [e.ids for e in encodings]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def baseline(data_dir: Path, out: Path, workers: int, fast: bool) -> dict:
    """Every document tokenized once and written with megatron-core's builder, streaming."""
    import multiprocessing

    import numpy as np
    import pyarrow.parquet as pq
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    _start(str(TOKENIZER), fast)
    tokenizer = _TOKENIZER[0]
    eod = tokenizer.eos_token_id
    dtype = DType.optimal_dtype(len(tokenizer))
    started = time.perf_counter()

    def batches():
        for path in source_files(data_dir):
            for batch in pq.ParquetFile(path).iter_batches(ENCODE_BATCH, columns=["text"]):
                yield batch.column(0).to_pylist()

    builder = IndexedDatasetBuilder(str(out / "corpus.bin"), dtype=dtype)
    tokens = documents = 0
    pool = None
    if workers > 1:
        context = multiprocessing.get_context("spawn")
        pool = context.Pool(workers, initializer=_start, initargs=(str(TOKENIZER), fast))
        encoded = pool.imap(_encode, batches(), chunksize=1)
    else:
        encoded = map(_encode, batches())
    for ids_per_row in encoded:
        for ids in ids_per_row:
            builder.add_document(np.array([*ids, eod], dtype=dtype), [len(ids) + 1])
            tokens += len(ids)
            documents += 1
    builder.finalize(str(out / "corpus.idx"))
    if pool is not None:
        pool.close()
        pool.join()
    return {"seconds": time.perf_counter() - started, "tokens": tokens, "documents": documents}


# --- ours ----------------------------------------------------------------------------------
SPEC = """
name: scale
total_tokens: {total}
seed: 0
phases:
  - name: pretrain
    fraction: 1.0
    sources:
      - {{name: math_pages, asset: raw_documents, quality_tier: medium, share: 1.0,
          max_epochs: 1}}
"""


def ours(data_dir: Path, work: Path, workers: int, budget: int) -> dict:
    """The manifest built on a cold token cache, the export in both formats, and the manifest
    rebuilt on the unchanged corpus, as the blend assets do them."""
    from mind_assets.blends.manifest import build_manifest
    from mind_assets.blends.release import ReleaseRequest, write_release
    from mind_assets.blends.spec import load_blend_spec
    from mind_assets.blends.tokens import TokenCache
    from mind_assets.blends.versions import save_manifest_version
    from mind_assets.lib.storage import blend_export_dir
    from mind_assets.lib.tokenizer import HFTokenizer
    from mind_assets.settings import BlendSettings

    for leftover in ("token_cache", "blend_exports", "blend_manifest", ".scratch"):
        shutil.rmtree(data_dir / leftover, ignore_errors=True)
    spec_path = work / "scale.yaml"
    spec_path.write_text(SPEC.format(total=budget))
    tokenizer = HFTokenizer("HuggingFaceTB/SmolLM2-135M-Instruct", str(TOKENIZER))
    # Its facts worked out before the clock starts, as the baseline loads its tokenizer.
    assert tokenizer.fingerprint
    tokens = TokenCache(data_dir, tokenizer, workers=workers)

    def build():
        return build_manifest(
            load_blend_spec(spec_path),
            spec_path,
            data_dir,
            known={"shard": [f"s{n}" for n in range(SHARDS)]},
            tokens=tokens,
            lookup=lambda asset, partition: {"run_id": None, "data_version": None},
        )

    started = time.perf_counter()
    manifest = build()
    manifest_s = time.perf_counter() - started
    save_manifest_version(data_dir, manifest)
    options = BlendSettings(export_workers=workers)
    started = time.perf_counter()
    exports = write_release(
        ReleaseRequest(
            manifest,
            blend_export_dir(data_dir, "scale"),
            data_dir,
            ["parquet", "megatron"],
            options,
            (),
            tokenizer,
        )
    )
    export_s = time.perf_counter() - started
    started = time.perf_counter()
    build()
    rebuild_s = time.perf_counter() - started
    return {
        "manifest_s": manifest_s,
        "export_s": export_s,
        "seconds": manifest_s + export_s,
        "rebuild_s": rebuild_s,
        "rows": sum(exports.parquet.rows.values()),
        "tokens": sum(exports.parquet.tokens.values()),
        "corpus_tokens": sum(f.tokens for p in manifest.phases for s in p.sources for f in s.files),
        "parts": json.loads((exports.directory / "export.json").read_text())["parts"],
    }


class PeakMemory:
    """Peak resident memory of this process and of its workers together, sampled from /proc
    every 0.2 s. (`getrusage`'s maxrss will not do: Linux carries a process's high-water mark
    across exec, so a measured process would report its launcher's peak.)"""

    def __init__(self) -> None:
        import threading

        self.own = self.workers = self.total = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _rss_mb(pid: int) -> float:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    @staticmethod
    def _descendants(pid: int) -> list[int]:
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = [], [pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.2):
            own = self._rss_mb(me)
            workers = sum(self._rss_mb(pid) for pid in self._descendants(me))
            self.own, self.workers = max(self.own, own), max(self.workers, workers)
            self.total = max(self.total, own + workers)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure(args: argparse.Namespace) -> None:
    """One configuration, in this process; prints its figures as JSON."""
    data_dir = Path(args.data)
    work = data_dir.parent / f"work-{args.measure}-{args.workers}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["MIND_DATA_DIR"] = str(data_dir)
    with PeakMemory() as memory:
        if args.measure == "ours":
            figures = ours(data_dir, work, args.workers, args.budget)
        else:
            figures = baseline(data_dir, work, args.workers, fast=args.measure == "baseline-fast")
    figures["rss_mb"], figures["child_rss_mb"] = memory.total, memory.workers
    shutil.rmtree(work, ignore_errors=True)
    print("RESULT " + json.dumps(figures))


def run(what: str, data_dir: Path, workers: int, budget: int = 0) -> dict:
    command = [
        sys.executable,
        __file__,
        "--measure",
        what,
        "--data",
        str(data_dir),
        "--workers",
        str(workers),
        "--budget",
        str(budget),
    ]
    load = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(
            f"{what} ({workers} workers) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    figures = json.loads(lines[-1][len("RESULT ") :])
    figures["load_before"] = load
    print(f"{what} workers={workers}: {figures}", flush=True)
    return figures


def corpus_budget(data_dir: Path, facts: dict) -> int:
    """The blend's token budget: BUDGET_SHARE of the corpus's tokens, estimated from a sample
    of 2,000 documents."""
    import pyarrow.parquet as pq

    from mind_assets.lib.tokenizer import load_tokenizer

    sample = pq.read_table(source_files(data_dir)[0], columns=["text"]).slice(0, 2000)
    texts = sample["text"].to_pylist()
    counted = load_tokenizer(str(TOKENIZER))(texts, add_special_tokens=False)["input_ids"]
    per_char = sum(map(len, counted)) / sum(map(len, texts))
    return int(BUDGET_SHARE * facts["chars"] * per_char)


def cpu() -> str:
    from mind_assets.llm.hardware import detect_host

    return detect_host().describe()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--big-docs", type=int, default=1_000_000)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--measure", choices=("ours", "baseline", "baseline-fast"))
    parser.add_argument("--data")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--budget", type=int, default=0)
    args = parser.parse_args()
    if args.measure:
        measure(args)
        return

    os.environ["MIND_DATA_DIR"] = str(BENCH_DIR / "blend_scale" / "unused")
    data_dir = BENCH_DIR / "blend_scale" / f"docs-{args.docs}" / "data"
    facts = write_corpus(data_dir, args.docs)
    budget = corpus_budget(data_dir, facts)
    results: dict[str, dict] = {}
    for workers in (1, 2):
        # Interleaved, so a change in the machine's load touches both sides alike.
        results[f"baseline-{workers}"] = run("baseline", data_dir, workers)
        results[f"ours-{workers}"] = run("ours", data_dir, workers, budget)
        results[f"baseline-fast-{workers}"] = run("baseline-fast", data_dir, workers)
    big = None
    if not args.skip_big:
        big_dir = BENCH_DIR / "blend_scale" / f"docs-{args.big_docs}" / "data"
        big_facts = write_corpus(big_dir, args.big_docs)
        big = run("ours", big_dir, 2, corpus_budget(big_dir, big_facts))
    write_results(facts, results, big, args)


def write_results(facts: dict, results: dict, big: dict | None, args) -> None:
    tokens = results["baseline-1"]["tokens"]
    rows = []
    for workers in (1, 2):
        base, mine, fast = (
            results[f"{k}-{workers}"] for k in ("baseline", "ours", "baseline-fast")
        )
        rows.append(
            f"| {workers} | {base['seconds']:.1f} | {fast['seconds']:.1f} | "
            f"{mine['manifest_s']:.1f} | {mine['export_s']:.1f} | {mine['seconds']:.1f} | "
            f"**{mine['seconds'] / base['seconds']:.2f}x** | "
            f"{mine['seconds'] / fast['seconds']:.2f}x | {mine['rebuild_s']:.2f} "
            f"({100 * mine['rebuild_s'] / mine['seconds']:.1f} %) | "
            f"{mine['rss_mb']:,.0f} / {mine['child_rss_mb']:,.0f} | "
            f"{base['rss_mb']:,.0f} / {base['child_rss_mb']:,.0f} |"
        )
    one, two = results["ours-1"], results["ours-2"]
    lines = [
        "<!-- blend_scale:start -->",
        "## The blend path at pretraining scale (`benchmarks/blend_scale.py`)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d} on **{cpu()}**. Corpus: {facts['docs']:,} generated "
        f"documents of napkin paragraphs ({facts['chars'] / 1e6:,.0f} M characters, "
        f"{tokens / 1e6:.1f} M SmolLM2 tokens, {SHARDS} raw_documents partitions); a raw-only "
        f"blend of {BUDGET_SHARE:.1%} of its tokens ({one['rows']:,} documents, "
        f"{one['tokens'] / 1e6:.1f} M tokens exported). Every configuration in its own process, "
        "one after another; seconds are wall time; RSS is the peak of the process and its "
        "workers together / of its workers alone (sampled from /proc every 0.2 s).",
        "",
        "| workers | baseline s | baseline (fast call) s | ours: manifest s | ours: export "
        "(parquet + Megatron) s | ours total s | ours / baseline | ours / baseline (fast call) "
        "| rebuild s (of ours total) | ours RSS MB | baseline RSS MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"- Throughput with 2 workers vs 1: **{one['seconds'] / two['seconds']:.2f}x** "
        f"(baseline: {results['baseline-1']['seconds'] / results['baseline-2']['seconds']:.2f}x).",
        "- The baseline tokenizes every document once and writes one `.bin/.idx` "
        "(megatron-core's `tools/preprocess_data.py` shape). Ours tokenizes every document once "
        "into the token cache while building the manifest (its counts), then writes the parquet "
        "export and the Megatron datasets from the cached ids in one pass; a rebuild of the "
        "unchanged corpus reads only the cache's per-file summaries.",
        "- The fast-call baseline encodes with `encode_batch_fast` (no character offsets), the "
        "call our workers make: the difference between the two baselines is the tokenizer "
        "call, the difference to ours is the pipeline.",
        "- The peak of ours comes before the clock starts: the short child process that loads "
        "the blend tokenizer with transformers (and the torch that transformers imports) for its "
        "fingerprint, vocabulary size and saved files, counted here as a worker. The process "
        "that builds and exports the blend never imports transformers or torch.",
        "- Load average before each run: "
        + ", ".join(f"{k} {v['load_before']:.1f}" for k, v in results.items())
        + ".",
    ]
    if big is not None:
        lines.append(
            f"- {args.big_docs:,} documents ({big['corpus_tokens'] / 1e9:.2f} B tokens in the "
            f"corpus, {big['rows']:,} rows exported), 2 workers: manifest "
            f"{big['manifest_s']:.0f} s, export {big['export_s']:.0f} s, rebuild "
            f"{big['rebuild_s']:.1f} s; peak RSS {big['rss_mb']:,.0f} MB (workers "
            f"{big['child_rss_mb']:,.0f} MB) against {two['rss_mb']:,.0f} MB "
            f"({two['child_rss_mb']:,.0f} MB) at {facts['docs']:,}: "
            f"{big['rss_mb'] / two['rss_mb']:.2f}x. Parts per phase: {big['parts']}."
        )
    lines.append("<!-- blend_scale:end -->")
    replace_section(RESULTS, "blend_scale", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
