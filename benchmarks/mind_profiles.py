"""How many MIND generations each filter profile keeps, on the very same generations.

Generates conversations with the `paper` prompt set (`MIND_CONVERSATIONS__PROMPT_SET=paper`) for
every style of the set, the `rephrase` baseline included, on the first few real napkin sections
(read in place), through the `conversations` asset in-process. Then materializes
`filtered_conversations` for every style twice over those same files, once with
`MIND_FILTERS__PROFILE=paper` (the paper's minimal heuristics: length and turn structure) and
once with `strict` (every rule), and the `longest_conversations` set after each. Writes the kept
counts per style and profile, and the rejections per rule, into benchmarks/RESULTS.md (the
section between the mind-profiles markers).

Run with `make bench`, or alone: `python benchmarks/mind_profiles.py --sections 4 --max-tokens
256` (a few minutes per style on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.data import NAPKIN  # noqa: E402
from benchmarks.results import RESULTS, replace_section  # noqa: E402

PROFILES = ("paper", "strict")
SHARD = "profiles"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sections", type=int, default=4, help="napkin sections, from the top")
    parser.add_argument("--max-tokens", type=int, default=256, help="MIND_MAX_TOKENS")
    parser.add_argument("--styles", default="", help="comma-separated; default every style")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mind-profiles-"))
    os.environ["MIND_DATA_DIR"] = str(work / "data")
    os.environ.setdefault("MIND_MODELS_DIR", str(ROOT / "data" / "models"))
    os.environ["MIND_MAX_TOKENS"] = str(args.max_tokens)
    os.environ["MIND_KEEP_ENGINE_BETWEEN_RUNS"] = "1"
    # Generation is measured here; decontamination has its own benchmark (decontamination.py).
    os.environ.setdefault("MIND_DECONTAMINATION__BENCHMARKS", "[]")
    os.environ["MIND_CONVERSATIONS__PROMPT_SET"] = "paper"
    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    (work / "dagster_home").mkdir(parents=True)
    load_before = os.getloadavg()[0]

    import pyarrow.parquet as pq
    from dagster import DagsterInstance, MultiPartitionKey, materialize

    from mind_assets.conversations.assets import conversations, mind_prompts
    from mind_assets.conversations.styles import load_styles
    from mind_assets.corpus.assets import chunks, raw_documents
    from mind_assets.corpus.shard_specs import make_shard_spec
    from mind_assets.corpus.shards import register_shard
    from mind_assets.definitions import ASSETS
    from mind_assets.filtering.assets import filtered_conversations, longest_conversations
    from mind_assets.filtering.outputs import FILTERED_CONVERSATIONS
    from mind_assets.lib.storage import asset_path
    from mind_assets.llm.resource import LLMResource
    from mind_assets.settings import get_settings

    settings = get_settings()
    styles = {s.key: s for s in load_styles(settings.prompts_dir, "paper")}
    keys = [s for s in args.styles.split(",") if s] or list(styles)
    llm = LLMResource.from_settings(settings)
    tuning = llm.tuning()
    instance = DagsterInstance.get()
    resources = {"llm": llm}

    def run(selection, partition_key=None):
        return materialize(
            ASSETS,
            selection=selection,
            partition_key=partition_key,
            instance=instance,
            resources=resources,
            raise_on_error=False,  # a profile that keeps nothing fails a blocking check
        )

    register_shard(
        instance, settings, make_shard_spec(SHARD, [str(NAPKIN)], rows=f"0:{args.sections}")
    )
    run([mind_prompts])
    assert run([raw_documents, chunks], SHARD).success
    n_chunks = pq.read_metadata(asset_path(settings.data_dir, "chunks", SHARD)).num_rows

    generated: dict[str, dict] = {}
    started = time.monotonic()
    for style in keys:
        key = MultiPartitionKey({"shard": SHARD, "style": style})
        assert run([conversations], key).success, f"conversations {style} failed"
        rows = pq.read_table(asset_path(settings.data_dir, "conversations", SHARD, style))
        prompt_ids = set(rows.column("prompt_id").to_pylist())
        assert prompt_ids == {f"mind/paper/{style}"}, prompt_ids
        generated[style] = {
            "rows": rows.num_rows,
            "tokens": sum(rows.column("completion_tokens").to_pylist()),
            "cut": rows.column("finish_reason").to_pylist().count("length"),
            "turns": sum(n >= 2 for n in rows.column("n_turns").to_pylist()),
        }
        print(style, generated[style], flush=True)
    generation_seconds = time.monotonic() - started

    kept: dict[str, dict[str, int]] = {p: {} for p in PROFILES}
    rejections: dict[str, Counter] = {p: Counter() for p in PROFILES}
    longest: dict[str, Counter] = {}
    for profile in PROFILES:
        os.environ["MIND_FILTERS__PROFILE"] = profile
        for style in keys:
            run([filtered_conversations], MultiPartitionKey({"shard": SHARD, "style": style}))
            partition = {"shard": SHARD, "style": style}
            accepted = pq.read_table(FILTERED_CONVERSATIONS.path(settings.data_dir, partition))
            quarantine = pq.read_table(
                FILTERED_CONVERSATIONS.quarantine_path(settings.data_dir, partition)
            )
            assert set(accepted.column("filter_profile").to_pylist()) <= {profile}
            kept[profile][style] = accepted.num_rows
            for rules in quarantine.column("rejected_by").to_pylist():
                rejections[profile].update(rules)
        run([longest_conversations], SHARD)
        table = pq.read_table(asset_path(settings.data_dir, "longest_conversations", SHARD))
        longest[profile] = Counter(table.column("style").to_pylist())
        print(profile, kept[profile], dict(rejections[profile]), flush=True)

    write_results(
        args,
        keys=keys,
        titles={k: styles[k].title for k in keys},
        forms={k: styles[k].form for k in keys},
        n_chunks=n_chunks,
        generated=generated,
        kept=kept,
        rejections=rejections,
        longest=longest,
        host=tuning.host,
        dtype=tuning.dtype,
        load_before=load_before,
        generation_seconds=generation_seconds,
    )


def write_results(
    args, *, keys, titles, forms, n_chunks, generated, kept, rejections, longest, **run
) -> None:
    total = sum(generated[k]["rows"] for k in keys)
    lines = [
        "<!-- mind-profiles:start -->",
        "## MIND filter profiles on the same generations (`benchmarks/mind_profiles.py`)",
        "",
        f"Run {time.strftime('%Y-%m-%d')} on **{run['host']}**, {run['dtype']}; load average "
        f"before the run {run['load_before']:.1f}. Embedded SmolLM2-135M-Instruct, prompt set "
        f"`paper` (`MIND_CONVERSATIONS__PROMPT_SET=paper`), napkin sections 0:{args.sections} "
        f"({n_chunks} chunks), `MIND_MAX_TOKENS={args.max_tokens}`; {total} "
        f"generations in {run['generation_seconds']:.0f} s through the `conversations` asset. "
        "`filtered_conversations` then ran twice over the very same files: "
        "`MIND_FILTERS__PROFILE=paper` (missing_text, missing_source, too_short, "
        "not_a_conversation) and `strict` (every rule).",
        "",
        "| style | form | generated | cut at max_tokens | ≥ 2 turns | kept, paper | kept, strict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in keys:
        g = generated[k]
        turns = "n/a" if forms[k] != "conversation" else g["turns"]
        lines.append(
            f"| {titles[k]} (`{k}`) | {forms[k]} | {g['rows']} | {g['cut']} | {turns} | "
            f"{kept['paper'][k]} | {kept['strict'][k]} |"
        )
    lines.append(
        f"| **all** | | {total} | {sum(generated[k]['cut'] for k in keys)} | | "
        f"**{sum(kept['paper'].values())}** | **{sum(kept['strict'].values())}** |"
    )
    rules = sorted(
        set(rejections["paper"]) | set(rejections["strict"]),
        key=lambda r: (-rejections["strict"][r], r),
    )
    lines += [
        "",
        "Rejections per rule, over all styles (a row rejected by several rules counts under each; "
        "`-` where the profile does not run the rule):",
        "",
        "| rule | paper | strict |",
        "| --- | ---: | ---: |",
    ]
    paper_rules = {"missing_text", "missing_source", "too_short", "not_a_conversation"}
    for rule in rules:
        paper = rejections["paper"][rule] if rule in paper_rules else "-"
        lines.append(f"| `{rule}` | {paper} | {rejections['strict'][rule]} |")
    lines += [
        "",
        "Longest conversation per chunk (`longest_conversations`, conversation styles only; the "
        "rephrase is never a candidate): "
        + "; ".join(
            f"{p}: {sum(longest[p].values())} chunks"
            + (
                f" ({', '.join(f'{s} {n}' for s, n in longest[p].most_common())})"
                if longest[p]
                else ""
            )
            for p in PROFILES
        )
        + ".",
        "",
        f"- Same generations, two profiles: `paper` keeps {sum(kept['paper'].values())} of "
        f"{total}, `strict` {sum(kept['strict'].values())} of {total}. Every rule `paper` runs is "
        "also in `strict`, so `paper` keeps at least what `strict` keeps. The rephrase rows are "
        "not judged by `not_a_conversation`. A tiny model on a tiny sample: the figures compare "
        "the profiles on identical inputs; they are not the paper's acceptance rates.",
        "<!-- mind-profiles:end -->",
    ]
    replace_section(args.results, "mind-profiles", "\n".join(lines))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
