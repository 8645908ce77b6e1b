"""The dataset card of a published blend or asset: Hub metadata (configs, features, licence, size)
and a body that says how every row was made, rendered from facts gathered from the lineage
columns, the prompt files, the quarantines and, for a blend, its manifest and export. One
builder serves both; what differs (how configs are laid out, how a row is traced, what pins the
rows) is the card's `origin`."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from huggingface_hub import DatasetCardData

from mind_assets.blends.manifest import Manifest
from mind_assets.lib.outputs import OutputFamily
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
SPLIT = "train"
# Every card carries it; a folder whose card lacks it is never replaced by a publish.
PUBLISHED_TAG = "mind-assets"


def size_category(rows: int) -> str:
    for upper, label in SIZE_CATEGORIES:
        if rows < upper:
            return label
    return "n>1T"


@dataclass
class ConfigData:
    """One config as published (a blend phase, or a style, family or mode of an asset), its one
    train split."""

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
class PartitionData:
    """One partition of a published asset: the config it joins and the version file it read."""

    config: str
    partition: str  # Dagster partition key
    version: str  # the version file, relative to the data root
    rows: int
    tokens: int


@dataclass
class BlendOrigin:
    """A blend: one config per phase, rows pinned by its manifest."""

    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.blend

    unit = "source"  # what the lineage, seed and licence tables are keyed by


@dataclass
class FamilyOrigin:
    """One output family as it is now: the latest version of every materialized partition."""

    family: OutputFamily
    partitions: list[PartitionData]
    built_at: str

    @property
    def name(self) -> str:
        return self.family.name

    unit = "config"


@dataclass
class CardFacts:
    origin: BlendOrigin | FamilyOrigin
    configs: list[ConfigData]
    schema: pa.Schema
    # The distinct generation combinations (prompt, model, engine, sampling) per blend source
    # or per config: what `source_lineage` reads off the rows' lineage columns.
    lineage: dict[str, list[dict[str, Any]]]
    prompts: list[PromptText]
    seeds: dict[str, SeedRange]  # per blend source or per config
    rejections: list[dict[str, Any]]  # of, stage, partition, rule, rejected, evaluated
    licences: list[SourceLicences]
    tags: list[str] = field(default_factory=list)
    # Per blend source or config and file: the benchmark index its rows were checked against.
    checked: list[dict[str, Any]] = field(default_factory=list)
    # Rows each benchmark removed, per stage and partition behind the published rows.
    removals: list[dict[str, Any]] = field(default_factory=list)


def features(schema: pa.Schema) -> list[dict[str, Any]]:
    """The Hub's `features` of a schema, in the YAML form `datasets` reads back (lists and
    structs included), so the card and the parquet files always agree."""
    try:
        return datasets.Features.from_arrow_schema(schema)._to_yaml_list()
    except (TypeError, ValueError, NotImplementedError) as error:
        raise ValueError(f"schema has no Hub feature types: {error}") from error


def card_data(facts: CardFacts) -> DatasetCardData:
    """The card's YAML metadata: one config each, its features and split sizes."""
    total_rows = sum(c.rows for c in facts.configs)
    kind = "blend" if isinstance(facts.origin, BlendOrigin) else "asset"
    # The blend version the rows are: `mind gc` keeps it while this folder exists.
    version = (
        {"blend_version": facts.origin.manifest.ref}
        if isinstance(facts.origin, BlendOrigin) and facts.origin.manifest.version
        else {}
    )
    return DatasetCardData(
        **version,
        pretty_name=f"{facts.origin.name} (mind-assets {kind})",
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
            for p in facts.configs
        ],
        dataset_info=[
            {
                "config_name": p.name,
                "features": features(facts.schema),
                "splits": [{"name": SPLIT, "num_bytes": p.num_bytes, "num_examples": p.rows}],
                "download_size": p.download_size,
                "dataset_size": p.num_bytes,
            }
            for p in facts.configs
        ],
    )


def _fence(text: str) -> str:
    """A code fence longer than any backtick run inside `text`, so a prompt cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _lineage_rows(facts: CardFacts) -> list[dict[str, Any]]:
    """Each distinct generation combination once, with the sources or configs it made."""
    rows: dict[str, dict[str, Any]] = {}
    unit = f"{facts.origin.unit}s"
    for name, entries in facts.lineage.items():
        for entry in entries:
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
            rows.setdefault(key, {unit: [], **row})
            if name not in rows[key][unit]:
                rows[key][unit].append(name)
    return [{**r, unit: ", ".join(r[unit])} for r in rows.values()]


def _noun(facts: CardFacts) -> str:
    return "this blend" if isinstance(facts.origin, BlendOrigin) else "this dataset"


def _section_layout(facts: CardFacts) -> list[str]:
    if isinstance(facts.origin, BlendOrigin):
        return _section_phases(facts.origin.manifest, facts.configs)
    return _section_partitions(facts.origin, facts.configs)


def _section_phases(manifest: Manifest, configs: list[ConfigData]) -> list[str]:
    exported = {p.name: p for p in configs}
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


def _section_partitions(origin: FamilyOrigin, configs: list[ConfigData]) -> list[str]:
    family = origin.family
    joined = [d.name for d in family.dims if d.shards_rows]
    apart = [d.name for d in family.dims if not d.shards_rows]
    if apart:
        layout = f"one config per {' × '.join(apart)}" + (
            f", every {' and '.join(joined)} joined into it" if joined else ""
        )
    else:
        layout = f"one config, `default`, every {' and '.join(joined)} joined into it"
    config_rows = [
        {"config": c.name, "rows": c.rows, "tokens": c.tokens, "files": len(c.files)}
        for c in configs
    ]
    published = {c.name for c in configs}
    empty = sorted({p.config for p in origin.partitions} - published)
    left_out = (
        [
            "Left out, every row of their partitions filtered or quarantined (`datasets` "
            f"cannot load a split without rows): {', '.join(f'`{c}`' for c in empty)}.",
            "",
        ]
        if empty
        else []
    )
    partition_rows = [
        {
            "config": p.config,
            "partition": p.partition,
            "version read": p.version,
            "rows": p.rows,
            "tokens": p.tokens,
        }
        for p in origin.partitions
    ]
    return [
        "## Configs and partitions",
        "",
        f"The rows of the platform's `{family.name}` asset, {layout}, each config a single "
        "`train` split. Which rows: the latest version of every materialized partition of "
        f"`{family.name}` when this dataset was built ({origin.built_at}), each partition's "
        "rows in the order the stage wrote them; older versions and rejected rows are not "
        f"published. Load one config with "
        f'`datasets.load_dataset(PATH_OR_REPO, "{configs[0].name}")`.',
        "",
        markdown_table(config_rows),
        "",
        *left_out,
        "Partitions read (tokens of the "
        f"`{family.text_column}` column, counted with the platform's tokenizer; the version "
        "file is relative to the platform's data root):",
        "",
        markdown_table(partition_rows),
        "",
    ]


def _section_generation(facts: CardFacts) -> list[str]:
    lineage = _lineage_rows(facts)
    lines = ["## How the text was generated", ""]
    if not lineage:
        return [
            *lines,
            f"Nothing in {_noun(facts)} was generated by a model: every row is source text.",
            "",
        ]
    models = sorted({r["model"] for r in lineage})
    lines += [
        f"Models: {', '.join(f'`{m}`' for m in models)}. Each generated row carries its own "
        "lineage columns upstream (`model`, `engine`, `engine_version`, `engine_dtype`, "
        "`prompt_id`, `prompt_version`, `sampling_params`, `seed`). The combinations behind "
        f"{_noun(facts)}:",
        "",
        markdown_table(lineage),
        "",
    ]
    if isinstance(facts.origin, BlendOrigin):
        lines += ["Raw-document sources are text as collected, not generated.", ""]
    return lines


def _section_seeds(facts: CardFacts) -> list[str]:
    unit = facts.origin.unit
    rows = [
        {unit: name, "distinct seeds": s.distinct, "lowest": s.low, "highest": s.high}
        for name, s in facts.seeds.items()
    ]
    mixed = ""
    if isinstance(facts.origin, BlendOrigin):
        mixed = (
            f"The blend is mixed with seed `{facts.origin.manifest.seed}` (one random stream "
            "per phase), so the same manifest always yields the same rows in the same order. "
        )
    return [
        "## Seeds",
        "",
        f"{mixed}Every generation request has its own seed, derived from its inputs (chunk and "
        "style, task item, problem and sample) and the platform's base seed, so a row "
        "reproduces independently of the batch it ran in:",
        "",
        markdown_table(rows) if rows else f"_no {unit} of {_noun(facts)} records request seeds_",
        "",
    ]


def _section_filters(facts: CardFacts) -> list[str]:
    lines = [
        "## Filtering",
        "",
        "Generated rows pass named rules before anything downstream may read them; rejected "
        "rows are kept in a quarantine beside the accepted ones, never published. Rejections "
        f"per rule in the quarantine of every partition {_noun(facts)} derives from (counted "
        "with DuckDB over each quarantine's `rejected_by` column as it is now; `evaluated` is "
        "the partition's accepted plus rejected rows; a row can fail several rules):",
        "",
    ]
    if not facts.rejections:
        return [*lines, "_no stage behind these rows rejected any_", ""]
    return [*lines, markdown_table(facts.rejections), ""]


def _section_decontamination(facts: CardFacts) -> list[str]:
    lines = ["## Decontamination", ""]
    index = facts.origin.manifest.decontamination if isinstance(facts.origin, BlendOrigin) else {}
    if isinstance(facts.origin, BlendOrigin) and not index:
        lines += [
            "Decontamination was off when this blend was built (an empty benchmark list): its "
            "rows were not checked against any evaluation benchmark.",
            "",
        ]
    elif index:
        params = index.get("params", {})
        lines += [
            f"Every row was checked against these evaluation benchmarks (benchmark index "
            f"`{index['version']}`): a row sharing a run of {params.get('ngram')} words "
            f"({params.get('short_ngram')} for benchmark texts shorter than that) with a "
            "benchmark item, after case, whitespace, punctuation, LaTeX spacing and number "
            "formatting are normalised, was quarantined and is not here; a conversation is also "
            "quarantined when the chunk it was written from holds an item. Reworded items are "
            + (
                "asked about by a model judge."
                if params.get("paraphrase_judge")
                else "not caught (the paraphrase judge was off)."
            ),
            "",
            markdown_table(
                [
                    {
                        "benchmark": name,
                        "splits": "; ".join(index.get("splits", {}).get(name, [])),
                        "items": index.get("items", {}).get(name, ""),
                    }
                    for name in sorted(index["benchmarks"])
                ]
            ),
            "",
        ]
    if facts.checked:
        lines += [
            f"The benchmark index each {facts.origin.unit}'s files were checked against (every "
            "file records it):",
            "",
            markdown_table(facts.checked),
            "",
        ]
    lines += [
        f"Rows removed per benchmark in every stage behind {_noun(facts)} (quarantined, never "
        "published):",
        "",
        markdown_table(facts.removals) if facts.removals else "_no row held a benchmark item_",
        "",
    ]
    return lines


def _section_licences(facts: CardFacts) -> list[str]:
    unit = facts.origin.unit
    rows = []
    for s in facts.licences:
        for origin, licence in sorted(s.origins.items()):
            rows.append({unit: s.source, "origin": origin, "licence": licence})
        if s.unknown_count:
            examples = "; ".join(s.unknown)
            more = s.unknown_count - len(s.unknown)
            rows.append(
                {
                    unit: s.source,
                    "origin": examples + (f" (and {more} more)" if more > 0 else ""),
                    "licence": UNKNOWN_LICENCE,
                }
            )
    unknown = any(s.unknown_count for s in facts.licences)
    lines = [
        "## Licences",
        "",
        f"Licences of the text each {facts.origin.unit} derives from (generated text is derived "
        "from its source document or seed dataset, so it keeps that text's terms; a share-alike "
        "licence such as CC BY-SA 4.0 applies to the conversations written from that text):",
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
    models = sorted({r["model"] for r in _lineage_rows(facts)})
    if models:
        lines += [
            "The models' own terms may also apply to text they wrote: "
            + ", ".join(f"`{m}`" for m in models)
            + ".",
            "",
        ]
    return lines


def _section_trace(facts: CardFacts) -> list[str]:
    example = next((c.example_row_id for c in facts.configs if c.example_row_id), None)
    if isinstance(facts.origin, BlendOrigin):
        manifest = facts.origin.manifest
        example = example or manifest.row_id(manifest.phases[0].name, 0)
        how = (
            "`row_id` is `<blend>@<version>:<phase>:<position>`, the blend version included; "
            "`source`, `source_asset`, `source_file` "
            "(relative to the platform's data root) and `source_row_id` name the row it copies, "
            "and `epoch` which pass over that source it belongs to. On the platform that made "
            "this dataset, the whole ancestry of a row (the filtered row, its generation request "
            "with prompt, model and seed, the chunk and the raw document) is one command:"
        )
        command = f"mind trace {example}"
    else:
        family = facts.origin.family
        example = example or "ROW_ID"
        dims = ", ".join(f"`{d}`" for d in family.dim_names)
        parents = ", ".join(
            f"`{link.column}` names its `{link.family.name}` row"
            + (" (several)" if link.many else "")
            for link in family.parents
        )
        how = (
            f"Each row is a `{family.name}` row as the platform keeps it: `{family.id_column}` "
            f"identifies it within its partition ({dims})"
            + (f", and {parents}" if parents else "")
            + ". On the platform that made this dataset, the whole ancestry of a row (its "
            "generation request with prompt, model and seed, and each row it was made from, up "
            "to the raw document, seed rows or problem) is one command (it reads the "
            "partitions as they are on that platform now):"
        )
        command = f"mind trace --asset {family.name} {shlex.quote(example)}"
    return ["## Tracing a row", "", how, "", "```bash", command, "```", ""]


def _section_manifest(facts: CardFacts) -> list[str]:
    if not isinstance(facts.origin, BlendOrigin):
        return []
    m = facts.origin.manifest
    return [
        "## Manifest",
        "",
        # The spec's name only: its absolute path on the build machine is nobody else's business.
        f"Blend version `{m.ref}`: `mind trace {m.ref}:<phase>:<row>` follows any row back to "
        "its source.",
        "",
        f"Built {m.created_at} from the spec `{Path(m.spec_path).name}` "
        f"(sha256 `{m.spec_sha256}`), "
        f"{m.total_tokens} tokens in total. The manifest pins every input file by sha256 and "
        f"{len(m.pinned)} upstream partitions by data version.",
        "",
    ]


def _appendix_prompts(facts: CardFacts) -> list[str]:
    lines = ["## Appendix: prompts", ""]
    if not facts.prompts:
        return [*lines, f"_no prompts: nothing in {_noun(facts)} was generated_", ""]
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


def _intro(facts: CardFacts) -> list[str]:
    total_rows = sum(c.rows for c in facts.configs)
    total_tokens = sum(c.tokens for c in facts.configs)
    if isinstance(facts.origin, BlendOrigin):
        return [
            f"A {len(facts.origin.manifest.phases)}-phase pretraining blend made by mind-assets: "
            f"{total_rows} rows and {total_tokens} tokens, from raw math text and synthetic data "
            "generated from it. Everything below is generated from the blend's manifest and the "
            "lineage every row carries.",
        ]
    family = facts.origin.family
    return [
        f"The `{family.name}` rows made by mind-assets, in {len(facts.configs)} config(s): "
        f"{total_rows} rows and {total_tokens} tokens. Everything below is generated from the "
        "lineage every row carries, the prompt files and the quarantines of the stages behind "
        "them.",
    ]


def card_body(facts: CardFacts) -> str:
    lines = [f"# {facts.origin.name}", "", *_intro(facts), ""]
    for section in (
        _section_layout,
        _section_generation,
        _section_seeds,
        _section_filters,
        _section_decontamination,
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
