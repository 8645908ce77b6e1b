"""The dataset card of a published blend: Hub metadata (configs, features, licence, size) and a
body that says how every row was made, rendered from facts gathered from the manifest, the
export, the prompt files and the metrics."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from huggingface_hub import DatasetCardData

from mind_assets.blends.manifest import Manifest
from mind_assets.lib.report import markdown_table
from mind_assets.publish.licences import UNKNOWN_LICENCE, SourceLicences, card_licence

# The Hub's size buckets, by total rows.
SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
)
_ARROW_TO_FEATURE = {
    pa.string(): "string",
    pa.large_string(): "string",
    pa.int32(): "int32",
    pa.int64(): "int64",
    pa.float64(): "float64",
    pa.bool_(): "bool",
}
SPLIT = "train"
# Every card carries it; a folder whose card lacks it is never replaced by a publish.
PUBLISHED_TAG = "mind-assets"


def size_category(rows: int) -> str:
    for upper, label in SIZE_CATEGORIES:
        if rows < upper:
            return label
    return "n>1T"


@dataclass
class PhaseData:
    """One blend phase as published: one config, one train split."""

    name: str
    files: list[str]  # relative to the published folder
    rows: int
    tokens: int
    num_bytes: int  # uncompressed, as the Hub's `num_bytes` counts a split
    download_size: int  # the parquet files as stored
    example_row_id: str | None


@dataclass
class PromptText:
    prompt_id: str
    version: str
    path: str
    text: str | None  # the file's bytes when its current version is the recorded one
    current_version: str | None = None  # the file's version now, when it changed since
    problem: str | None = None  # why the file could not be read


@dataclass
class SeedRange:
    distinct: int
    low: int
    high: int


@dataclass
class CardFacts:
    manifest: Manifest
    phases: list[PhaseData]
    schema: pa.Schema
    prompts: list[PromptText]
    seeds: dict[str, SeedRange]  # per blend source
    rejections: list[dict[str, Any]]  # source, partition, rule, rejected, evaluated
    licences: list[SourceLicences]
    tags: list[str] = field(default_factory=list)


def features(schema: pa.Schema) -> list[dict[str, str]]:
    out = []
    for f in schema:
        if f.type not in _ARROW_TO_FEATURE:
            raise ValueError(f"column {f.name!r}: no Hub feature type for Arrow {f.type}")
        out.append({"name": f.name, "dtype": _ARROW_TO_FEATURE[f.type]})
    return out


def card_data(facts: CardFacts) -> DatasetCardData:
    """The card's YAML metadata: one config per phase, its features and split sizes."""
    total_rows = sum(p.rows for p in facts.phases)
    return DatasetCardData(
        pretty_name=f"{facts.manifest.blend} (mind-assets blend)",
        language=["en"],
        license=card_licence(facts.licences),
        task_categories=["text-generation"],
        size_categories=[size_category(total_rows)],
        tags=["synthetic", PUBLISHED_TAG, "pretraining", "math", *facts.tags],
        configs=[
            {
                "config_name": p.name,
                "data_files": [{"split": SPLIT, "path": f"{p.name}/{SPLIT}-*.parquet"}],
            }
            for p in facts.phases
        ],
        dataset_info=[
            {
                "config_name": p.name,
                "features": features(facts.schema),
                "splits": [{"name": SPLIT, "num_bytes": p.num_bytes, "num_examples": p.rows}],
                "download_size": p.download_size,
                "dataset_size": p.num_bytes,
            }
            for p in facts.phases
        ],
    )


def _fence(text: str) -> str:
    """A code fence longer than any backtick run inside `text`, so a prompt cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _lineage_rows(manifest: Manifest) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for phase in manifest.phases:
        for source in phase.sources:
            for entry in source.lineage:
                row = {
                    "model": entry.get("model", ""),
                    "engine": entry.get("engine", ""),
                    "engine_version": entry.get("engine_version", ""),
                    "dtype": entry.get("engine_dtype", ""),
                    "prompt_id": entry.get("prompt_id", ""),
                    "prompt_version": entry.get("prompt_version", ""),
                    "sampling_params": entry.get("sampling_params", {}),
                }
                if entry.get("isolation"):
                    row["isolation"] = entry["isolation"]
                key = json.dumps(row, sort_keys=True, default=str)
                rows.setdefault(key, {"sources": [], **row})
                if source.name not in rows[key]["sources"]:
                    rows[key]["sources"].append(source.name)
    return [{**r, "sources": ", ".join(r["sources"])} for r in rows.values()]


def _section_phases(facts: CardFacts) -> list[str]:
    manifest = facts.manifest
    exported = {p.name: p for p in facts.phases}
    phase_rows = [
        {
            "config (phase)": p.name,
            "rows": exported[p.name].rows,
            "tokens exported": exported[p.name].tokens,
            "token budget": round(p.budget_tokens),
            "files": len(exported[p.name].files),
        }
        for p in manifest.phases
    ]
    source_rows = [
        {
            "phase": p.name,
            "source": s.name,
            "asset": s.asset,
            "quality tier": s.quality_tier,
            "target share": s.target_share,
            "weight": round(s.weight, 6),
            "epochs": round(s.epochs, 4),
            "max epochs": s.max_epochs,
            "capped": s.capped,
            "tokens": round(s.tokens),
            "available tokens": s.available_tokens,
            "files": len(s.files),
        }
        for p in manifest.phases
        for s in p.sources
    ]
    return [
        "## Configs and phases",
        "",
        "Each blend phase is one config with a single `train` split, rows in training order "
        f"(mixed by the manifest's weights, seed {manifest.seed}). Load one with "
        f'`datasets.load_dataset(PATH_OR_REPO, "{manifest.phases[0].name}")`.',
        "",
        markdown_table(phase_rows),
        "",
        "Sources of each phase (tokens counted with the tokenizer of "
        f"`{manifest.tokenizer}`; a source whose rows cannot fill its share repeats at most "
        "`max epochs` times and is marked `capped`):",
        "",
        markdown_table(source_rows),
        "",
    ]


def _section_generation(facts: CardFacts) -> list[str]:
    lineage = _lineage_rows(facts.manifest)
    lines = ["## How the text was generated", ""]
    if not lineage:
        return [
            *lines,
            "No source of this blend was generated by a model: every row is source text.",
            "",
        ]
    models = sorted({r["model"] for r in lineage})
    lines += [
        f"Models: {', '.join(f'`{m}`' for m in models)}. Each generated row carries its own "
        "lineage columns upstream (`model`, `engine`, `engine_version`, `engine_dtype`, "
        "`prompt_id`, `prompt_version`, `sampling_params`, `seed`). The combinations behind "
        "this blend:",
        "",
        markdown_table(lineage),
        "",
        "Raw-document sources are text as collected, not generated.",
        "",
    ]
    return lines


def _section_seeds(facts: CardFacts) -> list[str]:
    rows = [
        {"source": name, "distinct seeds": s.distinct, "lowest": s.low, "highest": s.high}
        for name, s in facts.seeds.items()
    ]
    return [
        "## Seeds",
        "",
        f"The blend is mixed with seed `{facts.manifest.seed}` (one random stream per phase), "
        "so the same manifest always yields the same rows in the same order. Every generation "
        "request has its own seed, derived from its inputs (chunk and style, task item, problem "
        "and sample) and the platform's base seed, so a row reproduces independently of the "
        "batch it ran in:",
        "",
        markdown_table(rows) if rows else "_no source of this blend records per-request seeds_",
        "",
    ]


def _section_filters(facts: CardFacts) -> list[str]:
    lines = [
        "## Filtering",
        "",
        "Generated rows pass named rules before a blend may read them; rejected rows are kept "
        "in a quarantine upstream, never published. Rejections per rule for the partitions this "
        "blend reads (from the platform's metrics; a row can fail several rules):",
        "",
    ]
    if not facts.rejections:
        return [*lines, "_no filter decisions are recorded for these partitions_", ""]
    return [*lines, markdown_table(facts.rejections), ""]


def _section_licences(facts: CardFacts) -> list[str]:
    rows = []
    for s in facts.licences:
        for origin, licence in sorted(s.origins.items()):
            rows.append({"source": s.source, "origin": origin, "licence": licence})
        if s.unknown_count:
            examples = "; ".join(s.unknown)
            more = s.unknown_count - len(s.unknown)
            rows.append(
                {
                    "source": s.source,
                    "origin": examples + (f" (and {more} more)" if more > 0 else ""),
                    "licence": UNKNOWN_LICENCE,
                }
            )
    unknown = any(s.unknown_count for s in facts.licences)
    lines = [
        "## Licences",
        "",
        "Licences of the text each source derives from (generated text is derived from its "
        "source document or seed dataset, so it keeps that text's terms; a share-alike licence "
        "such as CC BY-SA 4.0 applies to the conversations written from that text):",
        "",
        markdown_table(rows),
        "",
    ]
    if unknown:
        lines += [
            f"`{UNKNOWN_LICENCE}`: the platform has no licence recorded for these origins "
            "(`mind_assets/publish/licences.py` lists the known ones). Check their terms before "
            "redistributing this dataset.",
            "",
        ]
    models = sorted({r["model"] for r in _lineage_rows(facts.manifest)})
    if models:
        lines += [
            "The models' own terms may also apply to text they wrote: "
            + ", ".join(f"`{m}`" for m in models)
            + ".",
            "",
        ]
    return lines


def _section_trace(facts: CardFacts) -> list[str]:
    example = next((p.example_row_id for p in facts.phases if p.example_row_id), None)
    example = example or f"{facts.manifest.blend}:{facts.manifest.phases[0].name}:0"
    return [
        "## Tracing a row",
        "",
        "`row_id` is `<blend>:<phase>:<position>`; `source`, `source_asset`, `source_file` "
        "(relative to the platform's data root) and `source_row_id` name the row it copies, "
        "and `epoch` which pass over that source it belongs to. On the platform that made this "
        "dataset, the whole ancestry of a row (the filtered row, its generation request with "
        "prompt, model and seed, the chunk and the raw document) is one command:",
        "",
        "```bash",
        f"mind trace {example}",
        "```",
        "",
    ]


def _section_manifest(facts: CardFacts) -> list[str]:
    m = facts.manifest
    return [
        "## Manifest",
        "",
        # The spec's name only: its absolute path on the build machine is nobody else's business.
        f"Built {m.created_at} from the spec `{Path(m.spec_path).name}` "
        f"(sha256 `{m.spec_sha256}`), "
        f"{m.total_tokens} tokens in total. The manifest pins every input file by sha256 and "
        f"{len(m.pinned)} upstream partitions by data version.",
        "",
    ]


def _appendix_prompts(facts: CardFacts) -> list[str]:
    lines = ["## Appendix: prompts", ""]
    if not facts.prompts:
        return [*lines, "_no prompts: nothing in this blend was generated_", ""]
    for prompt in facts.prompts:
        lines += [f"### `{prompt.prompt_id}` version `{prompt.version}`", ""]
        if prompt.text is None:
            if prompt.current_version is None:
                lines += [f"The prompt file `{prompt.path}` cannot be read: {prompt.problem}", ""]
            else:
                lines += [
                    f"The prompt file `{prompt.path}` has changed since (now version "
                    f"`{prompt.current_version}`); this version's text is in the repository's "
                    "history.",
                    "",
                ]
            continue
        fence = _fence(prompt.text)
        lines += [f"From `{prompt.path}`:", "", f"{fence}yaml", prompt.text.rstrip("\n"), fence, ""]
    return lines


def card_body(facts: CardFacts) -> str:
    manifest = facts.manifest
    total_rows = sum(p.rows for p in facts.phases)
    total_tokens = sum(p.tokens for p in facts.phases)
    lines = [
        f"# {manifest.blend}",
        "",
        f"A {len(manifest.phases)}-phase pretraining blend made by mind-assets: {total_rows} rows "
        f"and {total_tokens} tokens, from raw math text and synthetic data generated from it. "
        "Everything below is generated from the blend's manifest and the lineage every row "
        "carries.",
        "",
    ]
    for section in (
        _section_phases,
        _section_generation,
        _section_seeds,
        _section_filters,
        _section_licences,
        _section_trace,
        _section_manifest,
        _appendix_prompts,
    ):
        lines += section(facts)
    return "\n".join(lines)


def render_card(facts: CardFacts) -> str:
    """The whole README.md: YAML metadata between `---` lines, then the body."""
    return f"---\n{card_data(facts).to_yaml()}\n---\n\n{card_body(facts)}"
