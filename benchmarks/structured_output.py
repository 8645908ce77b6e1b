"""Structured generation for task Q&A, before and after, side by side in one run.

The same families, seeds, item seeds and engine go through the `task_qa` asset three ways:
  text        the free-text prompts (prompts/task_qa/), parsed with regular expressions: before;
  json        the JSON prompts (prompts/task_qa/structured/) with the schema constraining
              decoding (vLLM structured outputs): after, the default;
  json-free   the JSON prompts without the constraint, to tell what the prompt does from what
              the constraint does.
For each: items generated, replies that did not parse on the first attempt and after
re-sampling them (MIND_TASK_QA__PARSE_RETRIES, from the asset's metadata), parse failures (items
rejected by `parse_failure`), rows kept after every rule, and output tokens per engine-second
over generation and enrichment, retries included.

Writes its figures into benchmarks/RESULTS.md (the section between the structured markers).
Run with `make bench`; about 20 minutes on a 2-core CPU machine with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.data import SHARED_DATA  # noqa: E402
from benchmarks.results import RESULTS, replace_section  # noqa: E402

FIXTURES = ROOT / "mind_assets_tests" / "fixtures" / "task_mirror"
ARMS = ("text", "json", "json-free")


def task_mirror(root: Path) -> Path:
    """The real GSM8K splits and the hand-written fixtures, linked in Hugging Face layout."""
    gsm8k = root / "openai" / "gsm8k" / "main"
    gsm8k.mkdir(parents=True)
    for split in ("train", "test"):
        (gsm8k / f"{split}.jsonl").symlink_to(SHARED_DATA / "gsm8k" / f"{split}.jsonl")
    for dataset in ("tau", "allenai"):
        (root / dataset).symlink_to(FIXTURES / dataset)
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=32, help="generated items per family")
    parser.add_argument("--families", default="gsm8k,commonsense_qa")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"any of {', '.join(ARMS)}")
    parser.add_argument(
        "--section", default="structured", help="RESULTS.md section (a second run beside)"
    )
    args = parser.parse_args()
    families = args.families.split(",")
    arms = [arm for arm in ARMS if arm in args.arms.split(",")]

    work = Path(tempfile.mkdtemp(prefix="mind-bench-structured-"))
    os.environ["MIND_DATA_DIR"] = str(work / "data")
    os.environ.setdefault("MIND_MODELS_DIR", str(ROOT / "data" / "models"))
    os.environ["MIND_KEEP_ENGINE_BETWEEN_RUNS"] = "1"
    # Generation is measured here; decontamination has its own benchmark (decontamination.py).
    os.environ.setdefault("MIND_DECONTAMINATION__BENCHMARKS", "[]")
    os.environ["MIND_TASK_MIRROR_DIR"] = str(task_mirror(work / "mirror"))
    os.environ["MIND_TASK_QA__FAMILIES"] = json.dumps(families)
    os.environ["MIND_TASK_QA__ITEMS"] = str(args.items)
    os.environ["MIND_TASK_QA__SEED_LIMIT"] = "300"
    os.environ.pop("MIND_MAX_TOKENS", None)  # each prompt file's own budget, as in production
    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    (work / "dagster_home").mkdir(parents=True)

    import pyarrow.parquet as pq
    from dagster import DagsterInstance, materialize

    import mind_assets.task_qa.generation as generation
    from mind_assets.definitions import ASSETS
    from mind_assets.lib.storage import asset_path
    from mind_assets.llm.resource import LLMResource
    from mind_assets.settings import get_settings
    from mind_assets.task_qa.assets import task_qa, task_seed_catalog, task_seeds

    instance = DagsterInstance.get()
    settings = get_settings()
    parse_retries = settings.task_qa.parse_retries
    llm_resource = LLMResource.from_settings(settings)
    tuning = llm_resource.tuning()
    resources = {"llm": llm_resource}
    materialize(ASSETS, selection=[task_seed_catalog], instance=instance, resources=resources)
    for family in families:
        materialize(
            ASSETS,
            selection=[task_seeds],
            partition_key=family,
            instance=instance,
            resources=resources,
        )

    schema_of = generation.response_schema
    figures: dict[tuple[str, str], dict[str, float]] = {}
    # Arms alternate within each family, so a change in machine load hits them alike.
    for family in families:
        for arm in arms:
            os.environ["MIND_TASK_QA__STRUCTURED_OUTPUT"] = "false" if arm == "text" else "true"
            # json-free: the JSON prompts, but no schema in the requests (so no constraint).
            generation.response_schema = (lambda model: None) if arm == "json-free" else schema_of
            result = materialize(
                ASSETS,
                selection=[task_qa],
                partition_key=family,
                instance=instance,
                resources=resources,
            )
            meta = {
                k: v.value
                for k, v in result.asset_materializations_for_node("task_qa")[0].metadata.items()
            }
            data = get_settings().data_dir
            accepted = pq.read_table(asset_path(data, "task_qa", family)).to_pylist()
            rejected = pq.read_table(
                asset_path(data, "task_qa", family, suffix=".quarantine.parquet")
            ).to_pylist()
            rows = len(accepted) + len(rejected)
            # Both forms of an item share its parse: count items, not rows.
            parse_failed = {
                r["item_id"]
                for r in rejected
                if any(reason.startswith("parse_failure") for reason in r["rejected_by"])
            }
            truncated = {
                r["item_id"] for r in accepted + rejected if r["finish_reason"] == "length"
            }
            figures[(arm, family)] = {
                "items": rows // 2,
                "parse_failures": len(parse_failed),
                # Replies (one per item) that did not parse, before and after re-sampling.
                "unparsed_first_attempt": meta["parse_failures_first_attempt"],
                "retries": meta["parse_retries_requested"],
                "unparsed_after_retries": meta["parse_failures_after_retries"],
                "enrich_unparsed_first_attempt": meta["enrich_parse_failures_first_attempt"],
                "enrich_unparsed_after_retries": meta["enrich_parse_failures_after_retries"],
                "truncated": len(truncated),
                "kept_rows": len(accepted),
                "rows": rows,
                "completion_tokens": meta["usage/completion_tokens"],
                "engine_seconds": meta["usage/engine_seconds"],
            }
            print(arm, family, figures[(arm, family)], flush=True)
    generation.response_schema = schema_of

    lines = [
        f"<!-- {args.section}:start -->",
        f"## Structured generation for task Q&A (`benchmarks/structured_output.py`, {args.section})",
        "",
        f"Run {time.strftime('%Y-%m-%d')} on {tuning.host}; engine dtype {tuning.dtype}; "
        f"embedded model; {args.items} items per family, each prompt file's own max_tokens; the "
        "same seeds, few-shot draws and sampling seeds in every arm. *text*: free-text prompts "
        "parsed by regular expressions (before); *json*: JSON prompts with the schema "
        "constraining decoding (after, the default); *json-free*: the JSON prompts without "
        "the constraint. An item is one generation (two rows: multiple-choice and open-ended "
        "form); *truncated* items hit max_tokens in the attempt they kept. Replies that do not "
        f"parse are re-sampled with fresh seeds (up to {parse_retries} more attempts): "
        "*unparsed* counts generation replies that did not parse on the first attempt -> after "
        "the retries (retries sent), *enrich unparsed* the same for enrichment replies; *parse "
        "failures* counts items the `parse_failure` rule rejected (after retries; it also "
        "rejects a math item's multiple-choice form whose answer is not a number). Output tok/s "
        "counts the retries' tokens.",
        "",
        "| arm | family | items | unparsed (retries) | enrich unparsed | parse failures "
        "| truncated | rows kept | kept rate | output tok/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (arm, family), f in figures.items():
        lines.append(
            f"| {arm} | {family} | {f['items']} | {f['unparsed_first_attempt']} -> "
            f"{f['unparsed_after_retries']} ({f['retries']}) | "
            f"{f['enrich_unparsed_first_attempt']} -> {f['enrich_unparsed_after_retries']} "
            f"| {f['parse_failures']} ({f['parse_failures'] / f['items']:.0%}) "
            f"| {f['truncated']} | {f['kept_rows']}/{f['rows']} | {f['kept_rows'] / f['rows']:.0%} "
            f"| {f['completion_tokens'] / f['engine_seconds']:.1f} |"
        )
    lines.append("")
    for family in families:
        if ("text", family) not in figures or ("json", family) not in figures:
            continue
        text, json_ = figures[("text", family)], figures[("json", family)]
        speed = (json_["completion_tokens"] / json_["engine_seconds"]) / (
            text["completion_tokens"] / text["engine_seconds"]
        )
        lines.append(
            f"- {family}: parse failures {text['parse_failures']} -> {json_['parse_failures']} "
            f"of {text['items']} items (unparsed replies before retries "
            f"{text['unparsed_first_attempt']} -> {json_['unparsed_first_attempt']}), kept rows "
            f"{text['kept_rows']} -> {json_['kept_rows']}, output tok/s json/text = {speed:.2f}."
        )
    lines.append(f"<!-- {args.section}:end -->")
    replace_section(RESULTS, args.section, "\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
