"""Filter throughput: our filter stage against datatrove's Gopher filters, side by side.

The same texts go through both: real napkin chunks plus generated conversations found under
$MIND_DATA_DIR/conversations (run `make demo` first), repeated with seeded variation up to
--rows texts. Ours applies all of its rules (RULES); datatrove applies GopherQualityFilter and
GopherRepetitionFilter (spaCy word tokenizer). Writes the "filters" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.data import NAPKIN  # noqa: E402
from benchmarks.results import RESULTS, replace_section  # noqa: E402


def base_texts(data_dir: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(text, source) pairs: napkin chunks (source: themselves) and generated conversations
    (source: their chunk)."""
    import pyarrow.parquet as pq

    from mind_assets.corpus.chunking import chunk_text

    def words(texts):
        return [len(t.split()) * 4 // 3 for t in texts]  # ~tokens; the split only needs sizes

    chunks = []
    with NAPKIN.open() as handle:
        for line in handle:
            chunks += [
                c.text
                for c in chunk_text(
                    json.loads(line)["text"], words, target_tokens=500, overlap_tokens=0
                )
            ]
    conversations = []
    for path in sorted((data_dir / "conversations").glob("*/*.parquet")):
        table = pq.read_table(path)
        chunk_path = data_dir / "chunks" / f"{path.parent.name}.parquet"
        source = {}
        if chunk_path.exists():
            ct = pq.read_table(chunk_path, columns=["chunk_id", "text"])
            source = dict(zip(ct["chunk_id"].to_pylist(), ct["text"].to_pylist(), strict=True))
        conversations += [
            (t, source.get(c, ""))
            for t, c in zip(table["text"].to_pylist(), table["chunk_id"].to_pylist(), strict=True)
        ]
    return [(c, c) for c in chunks], conversations


def vary(text: str, rng: random.Random) -> str:
    """A seeded variation: drop or swap a few sentences so copies are not byte-identical."""
    sentences = text.split(". ")
    if len(sentences) > 3:
        i = rng.randrange(len(sentences) - 1)
        sentences[i], sentences[i + 1] = sentences[i + 1], sentences[i]
        if rng.random() < 0.5:
            sentences.pop(rng.randrange(len(sentences)))
    return ". ".join(sentences) + (
        "" if rng.random() < 0.5 else f" (variant {rng.randrange(10**6)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()

    import pyarrow as pa

    from mind_assets.conversations.parsing import parse_turns
    from mind_assets.conversations.schema import CONVERSATION_SCHEMA
    from mind_assets.filtering.partition import filter_partition
    from mind_assets.filtering.rules import RULES
    from mind_assets.settings import get_settings

    settings = get_settings()
    chunks, conversations = base_texts(settings.data_dir)
    pool = chunks + conversations
    rng = random.Random(0)
    texts = [
        pool[i % len(pool)]
        if i < len(pool)
        else (vary(pool[i % len(pool)][0], rng), pool[i % len(pool)][1])
        for i in range(args.rows)
    ]
    kinds = ["chunk" if i % len(pool) < len(chunks) else "conversation" for i in range(args.rows)]
    print(
        f"{len(chunks)} napkin chunks, {len(conversations)} conversations -> {len(texts)} texts",
        flush=True,
    )

    # Ours: rows in the conversation schema (turns parsed as the conversations asset does).
    created = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i, (text, _) in enumerate(texts):
        turns = parse_turns(text)
        rows.append(
            {
                "conversation_id": str(i),
                "shard": "bench",
                "style": "teacher_student",
                "text": text,
                "turns": [{"speaker": t.speaker, "text": t.text} for t in turns],
                "n_turns": len(turns),
                "doc_id": "d",
                "chunk_id": f"c{i}",
                "prompt_id": "p",
                "prompt_version": "v",
                "model": "m",
                "engine": "e",
                "engine_version": "0",
                "engine_dtype": "float32",
                "sampling_params": "{}",
                "seed": 0,
                "prompt_tokens": 0,
                "completion_tokens": len(text.split()),
                "finish_reason": "stop",
                "created_at": created,
                "request_hash": str(i),
            }
        )
    sources = {f"c{i}": source for i, (_, source) in enumerate(texts)}
    started = time.monotonic()
    kept = 0
    content_kept = {"chunk": [0, 0], "conversation": [0, 0]}
    for offset in range(0, len(rows), args.batch):
        part = filter_partition(
            pa.Table.from_pylist(rows[offset : offset + args.batch], schema=CONVERSATION_SCHEMA),
            sources,
            settings.filters,
            {},
            shard="bench",
            style="teacher_student",
        )
        kept += part.accepted.num_rows
        decisions = part.decisions.to_pydict()
        failed = set()
        for cid, rule, ok in zip(
            decisions["conversation_id"], decisions["rule"], decisions["passed"], strict=True
        ):
            if rule in ("non_text", "degenerate_repetition") and not ok:
                failed.add(int(cid))
        for i in range(offset, min(offset + args.batch, len(rows))):
            content_kept[kinds[i]][0] += i not in failed
            content_kept[kinds[i]][1] += 1
    ours_s = time.monotonic() - started
    print(f"ours: {len(rows) / ours_s:.0f} rows/s, kept {kept}", flush=True)

    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    quality, repetition = GopherQualityFilter(), GopherRepetitionFilter()
    started = time.monotonic()
    dt_kept = 0
    dt_kind_kept = {"chunk": [0, 0], "conversation": [0, 0]}
    for i, (text, _) in enumerate(texts):
        doc = Document(text=text, id=str(i))
        ok = _passes(repetition, doc) and _passes(quality, doc)
        dt_kept += ok
        dt_kind_kept[kinds[i]][0] += ok
        dt_kind_kept[kinds[i]][1] += 1
    dt_s = time.monotonic() - started
    print(f"datatrove: {len(texts) / dt_s:.0f} rows/s, kept {dt_kept}", flush=True)

    ours_rate, dt_rate = len(rows) / ours_s, len(texts) / dt_s
    share = lambda k: f"{k[0] / k[1]:.1%}" if k[1] else "-"  # noqa: E731
    lines = [
        "<!-- filters:start -->",
        "## Filter throughput (`benchmarks/filters.py`)",
        "",
        f"Run {time.strftime('%Y-%m-%d')}, one process on the 2-core CPU machine. {len(texts):,} texts: "
        f"{len(chunks):,} real napkin chunks and {len(conversations):,} conversations generated by the embedded model, "
        "repeated with seeded sentence swaps/drops.",
        "",
        "| filter stage | rules | rows/s | kept (all rules) |",
        "| --- | ---: | ---: | ---: |",
        f"| mind-assets `filter_partition` | {len(RULES)} | {ours_rate:,.0f} | {kept / len(rows):.1%} |",
        f"| datatrove GopherQualityFilter + GopherRepetitionFilter | 2 filters (~17 thresholds) | {dt_rate:,.0f} | {dt_kept / len(texts):.1%} |",
        "",
        f"- **ours / datatrove = {ours_rate / dt_rate:.1f}x** rows/s (goal ≥ 5x).",
        "- Our overall keep rate is low by design: napkin chunks are not conversations, so `not_a_conversation` "
        "rejects them; the comparable rules are the content ones.",
        f"- Kept by our content rules (`non_text` + `degenerate_repetition`): napkin chunks {share(content_kept['chunk'])}, "
        f"conversations {share(content_kept['conversation'])}.",
        f"- Kept by datatrove's Gopher filters: napkin chunks {share(dt_kind_kept['chunk'])}, "
        f"conversations {share(dt_kind_kept['conversation'])}.",
        "<!-- filters:end -->",
    ]
    replace_section(RESULTS, "filters", "\n".join(lines))
    print(f"wrote {RESULTS}")


def _passes(step, doc) -> bool:
    result = step.filter(doc)
    return result if isinstance(result, bool) else bool(result[0])


if __name__ == "__main__":
    main()
