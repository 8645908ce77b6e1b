"""Decontamination throughput: the platform's n-gram index against a plain Python set of
n-grams, side by side in one run, on real text; and the share of the bundled corpus flagged.

Benchmarks: every evaluation split the task mirror holds among GSM8K test and the MATH test
sets (MATH-500, hendrycks_math); without a mirror, GSM8K test from ../shared/data. Rows: real
napkin sections cut into ~500-token chunks, repeated with seeded sentence swaps up to --rows,
with a few GSM8K test problems planted so both paths have something to find. Both paths read
the same texts in the same normal form and must flag the same rows; the baseline is what one
writes first: `re` for the normal form, a `set` of word tuples per benchmark, one row at a time.
Writes the "decontamination" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.data import NAPKIN, SHARED_DATA  # noqa: E402
from benchmarks.results import RESULTS, replace_section  # noqa: E402
from mind_assets.decontamination.index import NgramIndex  # noqa: E402

GSM8K_TEST = SHARED_DATA / "gsm8k" / "test.jsonl"
DEMO_CORPUS = ROOT / "mind_assets" / "corpus" / "demo_corpus.jsonl"
# (name, mirror folder, split): read when the mirror holds them.
MIRRORED = (
    ("gsm8k", "openai/gsm8k/main", "test"),
    ("math500", "HuggingFaceH4/MATH-500/default", "test"),
    *(
        (f"hendrycks_math_{s}", f"EleutherAI/hendrycks_math/{s}", "test")
        for s in (
            "algebra",
            "counting_and_probability",
            "geometry",
            "intermediate_algebra",
            "number_theory",
            "prealgebra",
            "precalculus",
        )
    ),
)

# The platform's normal form (mind_assets/decontamination/normalise.py) in Python's `re`.
_STEPS = (
    (re.compile(r"<<[^<>]*>>"), " "),
    (re.compile(r"(\d)(?:,|\{,\}|\\,|\\ )(\d\d\d)"), r"\1\2"),
    (re.compile(r"(\d)(?:,|\{,\}|\\,|\\ )(\d\d\d)"), r"\1\2"),
    (re.compile(r"(\d\.\d*?[1-9])0+\b", re.ASCII), r"\1"),
    (re.compile(r"(\d)\.0+\b", re.ASCII), r"\1"),
    (re.compile(r"\\[,;:!> ]"), " "),
    (
        re.compile(
            r"\\(?:quad|qquad|enspace|thinspace|medspace|thickspace|negthinspace|left|right|"
            r"bigl|bigr|bigg|big|displaystyle|textstyle|scriptstyle|limits|nolimits|text|"
            r"textrm|textbf|textit|mathrm|mathbf|mathit|mathsf|operatorname|mbox|emph|dfrac|"
            r"tfrac|frac|cdot|times|div)\b",
            re.ASCII,
        ),
        " ",
    ),
    (re.compile(r"\\[hv]space\*?\{[^}]*\}"), " "),
    (re.compile(r"[\W_]+"), " "),
)


def python_words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    for pattern, replacement in _STEPS:
        text = pattern.sub(replacement, text)
    return text.split()


class SetBaseline:
    """Per benchmark, a set of n-gram tuples; texts shorter than n words use the short n."""

    def __init__(self, benchmarks, texts, ngram=13, short_ngram=8):
        self.grams: dict[int, dict[tuple[str, ...], str]] = {ngram: {}, short_ngram: {}}
        for benchmark, text in zip(benchmarks, texts, strict=True):
            words = python_words(text)
            n = ngram if len(words) >= ngram else short_ngram
            if len(words) < n:
                continue
            for i in range(len(words) - n + 1):
                self.grams[n].setdefault(tuple(words[i : i + n]), benchmark)

    def flagged(self, text: str) -> bool:
        words = python_words(text)
        for n, grams in self.grams.items():
            if any(tuple(words[i : i + n]) in grams for i in range(len(words) - n + 1)):
                return True
        return False


def benchmark_texts(mirror: Path | None) -> tuple[list[str], list[str], list[str], list[str]]:
    """(benchmark, item id, text, splits read): every string field of every row."""
    benchmarks, items, texts, read = [], [], [], []
    sources = (
        [(n, mirror / folder / f"{split}.jsonl") for n, folder, split in MIRRORED] if mirror else []
    )
    sources = [(n, p) for n, p in sources if p.is_file()] or [("gsm8k", GSM8K_TEST)]
    for name, path in sources:
        read.append(f"{name} ({path})")
        with path.open() as lines:
            for row, line in enumerate(lines):
                for value in json.loads(line).values():
                    if isinstance(value, str) and value.strip():
                        benchmarks.append(name)
                        items.append(f"{name}:{row}")
                        texts.append(value)
    return benchmarks, items, texts, read


def chunks_of(path: Path, key: str = "text", words: int = 350) -> list[str]:
    """Real text cut into chunks of about `words` words at paragraph breaks."""
    out = []
    with path.open() as lines:
        for line in lines:
            current: list[str] = []
            for paragraph in json.loads(line)[key].split("\n\n"):
                current.append(paragraph)
                if sum(len(p.split()) for p in current) >= words:
                    out.append("\n\n".join(current))
                    current = []
            if current:
                out.append("\n\n".join(current))
    return out


def cpu_description() -> str:
    model = "unknown CPU"
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
        if line.startswith("CPU family:"):
            model += f" (family {line.split(':', 1)[1].strip()}"
        if line.startswith("Model:"):
            model += f", model {line.split(':', 1)[1].strip()})"
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2_000)
    args = parser.parse_args()
    mirror = os.environ.get("MIND_TASK_MIRROR_DIR")
    benchmarks, items, texts, read = benchmark_texts(Path(mirror) if mirror else None)
    load = os.getloadavg()[0]

    started = time.monotonic()
    index = NgramIndex(benchmarks, items, texts)
    ours_build = time.monotonic() - started
    started = time.monotonic()
    baseline = SetBaseline(benchmarks, texts)
    base_build = time.monotonic() - started

    pool = chunks_of(NAPKIN)
    planted = [t for t in texts if len(t.split()) > 30][:20]
    rng = random.Random(0)
    rows = []
    for i in range(args.rows):
        text = pool[i % len(pool)]
        if i >= len(pool):
            sentences = text.split(". ")
            j = rng.randrange(max(1, len(sentences) - 1))
            sentences[j : j + 2] = sentences[j : j + 2][::-1]
            text = ". ".join(sentences)
        if i % 1000 == 7:  # a benchmark problem inside a page, now and then
            text = f"{text}\n\n{planted[(i // 1000) % len(planted)]}"
        rows.append(text)
    words = sum(len(r.split()) for r in rows)

    started = time.monotonic()
    ours = []
    for offset in range(0, len(rows), args.batch):
        ours += [bool(s.matches) for s in index.scan(rows[offset : offset + args.batch])]
    ours_s = time.monotonic() - started
    started = time.monotonic()
    base = [baseline.flagged(r) for r in rows]
    base_s = time.monotonic() - started
    agree = sum(a == b for a, b in zip(ours, base, strict=True))

    corpus = [json.loads(line)["text"] for line in DEMO_CORPUS.open()]
    corpus_flagged = [bool(s.matches) for s in index.scan(corpus)]
    napkin = [json.loads(line)["text"] for line in NAPKIN.open()]
    napkin_flagged = [bool(s.matches) for s in index.scan(napkin)]

    ours_rate, base_rate = len(rows) / ours_s, len(rows) / base_s
    no_math = (
        ""
        if any("math" in r for r in read)
        else "No MATH test set was in a task mirror on this machine (nor any network to the hub), "
        "so MATH is not in these figures."
    )
    print(f"ours {ours_rate:,.0f} rows/s, baseline {base_rate:,.0f} rows/s", flush=True)
    lines = [
        "<!-- decontamination:start -->",
        "## Decontamination throughput (`benchmarks/decontamination.py`)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d} on **{cpu_description()}** (`lscpu`), one process, "
        f"shared with other jobs (load average {load:.1f} at the start). Benchmarks indexed: "
        f"{'; '.join(read)}: {len(set(items)):,} items, {len(texts):,} texts, "
        f"{index.stats.ngrams:,} n-grams (13 words, 8 for texts under 13 words). {no_math}",
        "",
        f"Rows: {len(rows):,} texts ({words:,} words), real napkin chunks of ~350 words "
        f"repeated with seeded sentence swaps; every 1,000th holds a planted benchmark text. "
        f"Both paths use the same normal form; they flag the same rows: {agree:,} of "
        f"{len(rows):,} agree ({sum(ours):,} flagged).",
        "",
        "| path | index build s | rows/s | words/s |",
        "| --- | ---: | ---: | ---: |",
        f"| mind-assets `NgramIndex.scan` (Arrow tokenising, numpy hashing, batches of "
        f"{args.batch:,}) | {ours_build:.1f} | {ours_rate:,.0f} | {words / ours_s:,.0f} |",
        f"| plain Python: `re` normal form, `set` of word tuples, row by row | {base_build:.1f} "
        f"| {base_rate:,.0f} | {words / base_s:,.0f} |",
        "",
        f"- **ours / baseline = {ours_rate / base_rate:.1f}x** rows/s.",
        f"- The bundled demo corpus (`mind_assets/corpus/demo_corpus.jsonl`): "
        f"**{sum(corpus_flagged)} of {len(corpus)} passages flagged "
        f"({sum(corpus_flagged) / len(corpus):.1%})**.",
        f"- All {len(napkin)} napkin sections (`../shared/data`): {sum(napkin_flagged)} flagged "
        f"({sum(napkin_flagged) / len(napkin):.1%}).",
        "<!-- decontamination:end -->",
    ]
    replace_section(RESULTS, "decontamination", "\n".join(lines))


if __name__ == "__main__":
    main()
