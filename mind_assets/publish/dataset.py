"""Write a blend or an asset as a folder `datasets.load_dataset` reads, each config a `train`
split, and a README.md dataset card generated from lineage. A blend publishes one config per
phase from its parquet export; an asset (an output family a blend may read) publishes the latest
version of every materialized partition, one config per key of the dimensions that tell its
kinds of rows apart (style, task family, source and mode; shards are joined).

The folder is built in a staging directory beside its destination and renamed into place, so a
failed publish leaves the previous folder (or none), never half of one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mind_assets.blends.export import EXPORT_SCHEMA
from mind_assets.blends.families import BLEND_SOURCES, family
from mind_assets.blends.lineage import benchmark_removals
from mind_assets.blends.manifest import Manifest, source_lineage
from mind_assets.blends.release import ReleaseRequest, release_version, write_release
from mind_assets.blends.spec import blend_names, blend_spec_exists, blend_spec_path
from mind_assets.blends.versions import BlendRef, load_manifest_version
from mind_assets.decontamination.record import read_record
from mind_assets.lib.outputs import Keys, OutputFamily
from mind_assets.lib.prompts import PromptError, load_prompt, prompt_text
from mind_assets.lib.storage import (
    InvalidNameError,
    OutputReadError,
    Staging,
    current_version,
    directory_entries,
    files_under,
    output_bytes,
    output_exists,
    output_of,
    output_rows,
    quarantine_version,
    read_output,
    read_output_schema,
    read_text,
    replace_dir,
    validate_name,
)
from mind_assets.lib.storage import blend_export_dir as export_dir
from mind_assets.lib.storage import blend_manifest_file as manifest_path
from mind_assets.lib.storage import published_dir as published_dir
from mind_assets.lib.tokenizer import BlendTokenizer, TokenCounter
from mind_assets.publish.card import (
    PUBLISHED_TAG,
    SPLIT,
    BlendOrigin,
    CardFacts,
    ConfigData,
    FamilyOrigin,
    PartitionData,
    PromptText,
    SeedRange,
    render_card,
)
from mind_assets.publish.licences import SourceLicences, blend_licences, licences_of
from mind_assets.settings import BlendSettings, MindSettings

# What may be published on its own: the families a blend may read, the platform's finished rows
# (unfiltered conversations, chunks and seeds are steps on the way, not data to train on).
PUBLISHABLE: dict[str, OutputFamily] = BLEND_SOURCES

Partitions = Mapping[str, Sequence[tuple[OutputFamily, Keys]]]  # per blend source or config


class PublishError(ValueError):
    """A blend or asset that cannot be published; the message names the missing file or field."""


@dataclass(frozen=True)
class Publishing:
    """What publishing a blend or an asset is given: the data root, the prompt files its card
    quotes, how to count tokens (built only when they must be counted), where to write (default
    `<data_dir>/published/<name>/`) and the card's extra tags."""

    data_dir: Path
    prompts_dir: Path
    make_counter: Callable[[], TokenCounter]
    out_dir: Path | None = None
    tags: Sequence[str] = ()

    def folder(self, name: str) -> Path:
        return self.out_dir if self.out_dir is not None else published_dir(self.data_dir, name)


@dataclass
class PublishReport:
    folder: Path
    rows: dict[str, int]  # per config
    tokens: dict[str, int]
    exported: bool  # whether a blend's parquet export had to be (re)written first
    kind: str = "blend"  # or "asset"
    card: str = ""  # the README.md written

    @classmethod
    def of(
        cls, folder: Path, configs: list[ConfigData], card: str, *, kind: str, exported: bool
    ) -> PublishReport:
        """The report of a folder written with these configs and this card."""
        return cls(
            folder,
            rows={c.name: c.rows for c in configs},
            tokens={c.name: c.tokens for c in configs},
            exported=exported,
            kind=kind,
            card=card,
        )


def load_blend_manifest(data_dir: Path, blends_dir: Path, blend: str) -> Manifest:
    """The blend's manifest, or an error saying whether the blend is unknown or not built."""
    try:
        validate_name(blend, kind="blend name")
    except InvalidNameError as error:
        raise PublishError(str(error)) from error
    path = manifest_path(data_dir, blend)
    try:
        return load_manifest_version(data_dir, BlendRef(blend))
    except OutputReadError as error:
        raise PublishError(f"manifest {error}") from error
    except FileNotFoundError as error:
        if not blend_spec_exists(blends_dir, blend):
            known = blend_names(blends_dir)
            raise PublishError(
                f"unknown blend {blend!r}: no spec {blend_spec_path(blends_dir, blend)} and no "
                f"manifest {path} (blend specs in {blends_dir}: {', '.join(known) or 'none'})"
            ) from error
        raise PublishError(
            f"blend {blend!r} has no manifest at {path}: materialize blend_manifest[{blend}]"
        ) from error
    except (KeyError, TypeError) as error:
        raise PublishError(f"manifest {path} is malformed: {error!r} (rebuild it)") from error


def export_is_current(manifest: Manifest, exports: Path) -> bool:
    """Whether the blend's parquet export holds this manifest version, every phase of it."""
    if (release_version(exports) or "") != manifest.version:
        return False
    return all(files_under(exports / p.name, "shard-*.parquet") for p in manifest.phases)


def _phase_rows(path: Path) -> pa.Table:
    try:
        return read_output(path, columns=["row_id", "blend", "n_tokens"])
    except OutputReadError as error:
        raise PublishError(f"export shard {error}") from error


def _prompts(lineage: Iterable[dict[str, Any]], prompts_dir: Path) -> list[PromptText]:
    """Each (prompt id, version) in the lineage with the file's text when it still is that
    version: prompts are files under `prompts/` named after their id."""
    wanted = {
        (entry["prompt_id"], entry.get("prompt_version") or "")
        for entry in lineage
        if entry.get("prompt_id")
    }
    root = prompts_dir.resolve()
    texts = []
    for prompt_id, version in sorted(wanted):
        path = prompts_dir / f"{prompt_id}.yaml"
        shown = f"prompts/{prompt_id}.yaml"
        if root not in path.resolve().parents:
            texts.append(PromptText(prompt_id, version, shown, None, problem="outside prompts/"))
            continue
        try:
            prompt = load_prompt(path)
        except PromptError as error:
            # The card is public: the build machine's paths stay out of it.
            problem = str(error).replace(str(prompts_dir), "prompts")
            texts.append(PromptText(prompt_id, version, shown, None, problem=problem))
            continue
        if prompt.version == version:
            texts.append(PromptText(prompt_id, version, shown, prompt_text(path)))
        else:
            texts.append(PromptText(prompt_id, version, shown, None, prompt.version))
    return texts


def _seeds(files: Mapping[str, Sequence[Path]]) -> dict[str, SeedRange]:
    """Per blend source or config, the range of per-request seeds its rows record."""
    seeds: dict[str, SeedRange] = {}
    for name, paths in files.items():
        values: list[pa.Array] = []
        for path in paths:
            if output_exists(path) and "seed" in read_output_schema(path).names:
                values.append(read_output(path, columns=["seed"])["seed"].combine_chunks())
        if values:
            column = pa.chunked_array(values)
            if len(column):
                seeds[name] = SeedRange(
                    distinct=len(pc.unique(column)),
                    low=pc.min(column).as_py(),
                    high=pc.max(column).as_py(),
                )
    return seeds


# Rows per rule in one quarantine: each `rejected_by` entry is `rule` or `rule: detail`, and a
# row that names a rule twice counts once for it.
_RULE_COUNTS = """
    SELECT rule, count(DISTINCT n) AS rejected FROM (
        SELECT n, trim(split_part(reason, ':', 1)) AS rule FROM (
            SELECT n, unnest(rejected_by) AS reason FROM (
                SELECT row_number() OVER () AS n, rejected_by FROM quarantine)))
    GROUP BY rule ORDER BY rejected DESC, rule"""


def _rejections(partitions: Partitions, data_dir: Path, unit: str) -> list[dict[str, Any]]:
    """Per-rule rejections of every partition the published rows derive from that keeps a
    quarantine (filtered conversations, task Q&A, Prismatic, solution traces), as the families
    declare their parents and quarantines, counted with DuckDB over each quarantine."""
    found: dict[tuple[str, str], tuple[OutputFamily, Keys, list[str]]] = {}
    for name, group in partitions.items():
        for declared, keys in group:
            for upstream, upstream_keys in declared.upstream(keys):
                if upstream.quarantine_schema is None:
                    continue
                key = (upstream.name, upstream.partition_key(upstream_keys))
                _, _, names = found.setdefault(key, (upstream, upstream_keys, []))
                if name not in names:
                    names.append(name)
    rows = []
    connection = duckdb.connect()
    try:
        for (stage, partition), (upstream, keys, names) in found.items():
            accepted = upstream.path(data_dir, keys)
            quarantine_path = quarantine_version(accepted, upstream.quarantine_path(data_dir, keys))
            if not output_exists(quarantine_path):
                continue
            evaluated = output_rows(quarantine_path)
            if output_exists(accepted):
                evaluated += output_rows(accepted)
            try:
                quarantine = read_output(quarantine_path, columns=["rejected_by"])
                connection.register("quarantine", quarantine)
                counts = connection.execute(_RULE_COUNTS).fetchall()
                connection.unregister("quarantine")
            except (duckdb.Error, OutputReadError) as error:
                raise PublishError(
                    f"quarantine {quarantine_path} cannot be counted per rule: {error}"
                ) from error
            for rule, rejected in counts:
                rows.append(
                    {
                        f"{unit}s": ", ".join(names),
                        "stage": stage,
                        "partition": partition,
                        "rule": rule,
                        "rejected": rejected,
                        "evaluated": evaluated,
                    }
                )
    finally:
        connection.close()
    return rows


def _stage_phases(manifest: Manifest, exports: Path, staging: Staging) -> list[ConfigData]:
    phases = []
    for phase in manifest.phases:
        shards = files_under(exports / phase.name, "shard-*.parquet")
        if not shards:
            raise PublishError(f"blend export {exports / phase.name} has no shard-*.parquet")
        files, rows, tokens, num_bytes, first = [], 0, 0, 0, None
        for n, shard in enumerate(shards):
            table = _phase_rows(shard)
            blends = set(table["blend"].to_pylist())
            if blends - {manifest.blend}:
                raise PublishError(
                    f"export shard {shard} holds rows of blend(s) {sorted(blends)}, "
                    f"not {manifest.blend!r}"
                )
            rows += table.num_rows
            num_bytes += output_bytes(shard)
            tokens += pc.sum(table["n_tokens"]).as_py() or 0
            if first is None and table.num_rows:
                first = table["row_id"][0].as_py()
            # The Hub's file naming for a split, so tools that infer splits from names agree.
            name = f"{SPLIT}-{n:05d}-of-{len(shards):05d}.parquet"
            staging.add_copy(shard, f"{phase.name}/{name}")
            files.append(f"{phase.name}/{name}")
        download = sum(staging.size(f) for f in files)
        phases.append(ConfigData(phase.name, files, rows, tokens, num_bytes, download, first))
    return phases


def _check_replaceable(folder: Path) -> None:
    """Refuse to replace a folder that is not an earlier publish (`--out` pointed elsewhere)."""
    try:
        entries = directory_entries(folder)
    except OutputReadError as error:
        raise PublishError(str(error)) from error
    card = read_text(folder / "README.md") if entries else None
    earlier = card is not None and f"\n- {PUBLISHED_TAG}\n" in card
    if entries and not earlier:
        raise PublishError(
            f"{folder} exists and is not a published blend or asset (no README.md tagged "
            f"{PUBLISHED_TAG}); "
            "choose an empty or new --out directory"
        )


@dataclass
class _Derivation:
    """What a published folder's rows derive from, per blend source or config (`unit`): the
    lineage of their generation, the files that hold them, the partitions those files are of and
    the licences of their origins."""

    unit: str  # "source" or "config"
    lineage: dict[str, list[dict[str, Any]]]
    files: dict[str, list[Path]]
    partitions: Partitions
    licences: list[SourceLicences]
    # Per source or config and file: the benchmark index its rows were checked against.
    checked: list[dict[str, Any]]

    def card_facts(
        self,
        origin: BlendOrigin | FamilyOrigin,
        configs: list[ConfigData],
        schema: pa.Schema,
        publishing: Publishing,
    ) -> CardFacts:
        """What the card states: the derivation, and the prompts, seeds, per-rule rejections and
        benchmark removals read off it."""
        combinations = (c for per_name in self.lineage.values() for c in per_name)
        return CardFacts(
            origin=origin,
            configs=configs,
            schema=schema,
            lineage=self.lineage,
            prompts=_prompts(combinations, publishing.prompts_dir),
            seeds=_seeds(self.files),
            rejections=_rejections(self.partitions, publishing.data_dir, self.unit),
            licences=self.licences,
            tags=list(publishing.tags),
            checked=self.checked,
            removals=_removals(self.partitions, publishing.data_dir),
        )


def _blend_derivation(manifest: Manifest, data_dir: Path) -> _Derivation:
    """Per blend source, the lineage, files and partitions its manifest pins, and their
    licences."""
    lineage: dict[str, list[dict[str, Any]]] = {}
    files: dict[str, list[Path]] = {}
    partitions: dict[str, list[tuple[OutputFamily, Keys]]] = {}
    for phase in manifest.phases:
        for source in phase.sources:
            lineage.setdefault(source.name, []).extend(source.lineage)
            for f in source.files:
                files.setdefault(source.name, []).append(f.resolve(data_dir))
                declared = family(f.asset)
                partitions.setdefault(source.name, []).append(
                    (declared, declared.keys(f.partition))
                )
    checked = [
        {
            "source": source.name,
            "asset": f.asset,
            "partition": f.partition,
            "index": (f.decontamination or {}).get("index_version", "never checked"),
            "benchmarks": ", ".join(sorted((f.decontamination or {}).get("benchmarks", {}))),
        }
        for phase in manifest.phases
        for source in phase.sources
        for f in source.files
    ]
    unique = list({json.dumps(c, sort_keys=True): c for c in checked}.values())
    return _Derivation(
        "source", lineage, files, partitions, blend_licences(manifest, data_dir), unique
    )


def _removals(partitions: Partitions, data_dir: Path) -> list[dict[str, Any]]:
    """Rows each benchmark removed in every stage behind the published rows."""
    upstream: dict[tuple[str, str], tuple[OutputFamily, Keys]] = {}
    for group in partitions.values():
        for declared, keys in group:
            for found, found_keys in declared.upstream(keys):
                upstream.setdefault(
                    (found.name, found.partition_key(found_keys)), (found, found_keys)
                )
    return benchmark_removals(upstream.values(), data_dir)


def publish_blend(
    blend: str,
    publishing: Publishing,
    *,
    blends_dir: Path,
    make_tokenizer: Callable[[str], BlendTokenizer],
    export_options: BlendSettings | None = None,
) -> PublishReport:
    """Write the published folder of `blend`, exporting the blend first when its parquet export
    is missing or older than its manifest. `make_tokenizer` loads the manifest's tokenizer (by
    the name it records) only when an export is needed; that export is written with
    `export_options` (default: the `MIND_BLENDS__*` defaults)."""
    data_dir = publishing.data_dir
    manifest = load_blend_manifest(data_dir, blends_dir, blend)
    if not manifest.phases:
        raise PublishError(f"manifest {manifest_path(data_dir, blend)} has no phases")
    folder = publishing.folder(blend)
    _check_replaceable(folder)
    exports = export_dir(data_dir, blend)
    exported = False
    if not export_is_current(manifest, exports):
        write_release(
            ReleaseRequest(
                manifest,
                exports,
                data_dir,
                ["parquet"],
                export_options or BlendSettings(),
                (),
                make_tokenizer(manifest.tokenizer),
            )
        )
        exported = True
    # The published folder is meant to be read by others (a staging directory is private).
    with replace_dir(folder, mode=0o755) as staging:
        phases = _stage_phases(manifest, exports, staging)
        derivation = _blend_derivation(manifest, data_dir)
        facts = derivation.card_facts(BlendOrigin(manifest), phases, EXPORT_SCHEMA, publishing)
        card = render_card(facts)
        staging.add_text("README.md", card)
    return PublishReport.of(folder, phases, card, kind="blend", exported=exported)


def config_name(declared: OutputFamily, keys: Keys) -> str:
    """The config a partition joins: its keys of the dimensions that tell kinds of rows apart
    (`debate`, `gsm8k`, `openmath-tir`), `default` when only shards split the family."""
    return "-".join(keys[d.name] for d in declared.dims if not d.shards_rows) or "default"


def _fitted(declared: OutputFamily, pointer: Path) -> pa.Table:
    """A partition's current version in exactly the declared schema, which the card states."""
    try:
        table = read_output(pointer)
    except OutputReadError as error:
        raise PublishError(str(error)) from error
    try:
        return table.select(declared.schema.names).cast(declared.schema)
    except (KeyError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise PublishError(
            f"{pointer} (version {current_version(pointer).name}) does not fit the declared "
            f"{declared.name} schema: {error}; rematerialize that partition"
        ) from error


def _stage_partitions(
    declared: OutputFamily,
    partitions: list[Keys],
    data_dir: Path,
    count: TokenCounter,
    staging: Staging,
) -> tuple[list[ConfigData], list[PartitionData]]:
    by_config: dict[str, list[Keys]] = {}
    for keys in partitions:
        by_config.setdefault(config_name(declared, keys), []).append(keys)
    configs, read = [], []
    for config, members in by_config.items():
        files, rows, tokens, num_bytes, first = [], 0, 0, 0, None
        pointers = [(keys, declared.path(data_dir, keys)) for keys in members]
        tables = [(keys, pointer, _fitted(declared, pointer)) for keys, pointer in pointers]
        # `datasets` cannot load a parquet file without rows, nor a split without files: a
        # partition the filters emptied is read (the card lists it) but writes no file, and a
        # config with no rows at all is left out (the card says so).
        written = sum(1 for _, _, table in tables if table.num_rows)
        for keys, pointer, table in tables:
            texts = [t or "" for t in table[declared.text_column].to_pylist()]
            partition_tokens = sum(count(texts)) if texts else 0
            if table.num_rows:
                name = f"{config}/{SPLIT}-{len(files):05d}-of-{written:05d}.parquet"
                staging.add_table(name, table)
                num_bytes += staging.table_bytes(name)
                if first is None:
                    first = table[declared.id_column][0].as_py()
                files.append(name)
            rows += table.num_rows
            tokens += partition_tokens
            version = current_version(pointer).relative_to(data_dir).as_posix()
            read.append(
                PartitionData(
                    config,
                    declared.partition_key(keys),
                    version,
                    table.num_rows,
                    partition_tokens,
                )
            )
        if not files:
            continue
        download = sum(staging.size(f) for f in files)
        configs.append(ConfigData(config, files, rows, tokens, num_bytes, download, first))
    return configs, read


def _family_derivation(
    declared: OutputFamily, partitions: list[Keys], data_dir: Path
) -> _Derivation:
    """Per config, the lineage, current versions and partitions an asset publishes, and their
    licences."""
    groups: dict[str, list[tuple[OutputFamily, Keys]]] = {}
    files: dict[str, list[Path]] = {}
    for keys in partitions:
        config = config_name(declared, keys)
        groups.setdefault(config, []).append((declared, keys))
        files.setdefault(config, []).append(current_version(declared.path(data_dir, keys)))
    lineage = {config: source_lineage(paths) for config, paths in files.items()}
    checked = []
    for config, paths in files.items():
        for path in paths:
            record = read_record(read_output_schema(path))
            checked.append(
                {
                    "config": config,
                    "file": output_of(path).relative_to(data_dir).as_posix(),
                    "index": record.index_version if record else "never checked",
                    "benchmarks": ", ".join(sorted(record.benchmarks)) if record else "",
                }
            )
    return _Derivation("config", lineage, files, groups, licences_of(groups, data_dir), checked)


def publish_family(asset: str, publishing: Publishing) -> PublishReport:
    """Write the published folder of one asset: the latest version of every materialized
    partition, one config per style, task family or source and mode, with a card generated from
    the rows' lineage."""
    data_dir = publishing.data_dir
    declared = PUBLISHABLE.get(asset)
    if declared is None:
        raise PublishError(
            f"{asset!r} is not a publishable asset (publishable: {', '.join(sorted(PUBLISHABLE))})"
        )
    partitions = declared.materialized(data_dir)
    if not partitions:
        raise PublishError(
            f"asset {asset!r} has nothing materialized: no partition file under "
            f"{data_dir / asset} (materialize {asset} first)"
        )
    folder = publishing.folder(asset)
    _check_replaceable(folder)
    count = publishing.make_counter()
    built_at = datetime.now(UTC).isoformat(timespec="seconds")
    with replace_dir(folder, mode=0o755) as staging:
        configs, read = _stage_partitions(declared, partitions, data_dir, count, staging)
        if not configs:
            raise PublishError(
                f"asset {asset!r} has no rows to publish: every materialized partition "
                f"({', '.join(sorted({p.partition for p in read}))}) is empty, e.g. all its rows "
                "quarantined (see `mind metrics --views rejections_per_rule`)"
            )
        derivation = _family_derivation(declared, partitions, data_dir)
        origin = FamilyOrigin(declared, read, built_at)
        facts = derivation.card_facts(origin, configs, declared.schema, publishing)
        card = render_card(facts)
        staging.add_text("README.md", card)
    return PublishReport.of(folder, configs, card, kind="asset", exported=False)


def publish(
    name: str,
    settings: MindSettings,
    make_counter: Callable[[], TokenCounter],
    make_tokenizer: Callable[[str], BlendTokenizer],
    *,
    out_dir: Path | None = None,
    tags: Sequence[str] = (),
) -> PublishReport:
    """`mind publish NAME`: the asset of that name (see PUBLISHABLE) or the blend, under the
    settings' data root. Tokens of an asset's rows are counted with `make_counter` (the engine
    model's); a blend export it needs first is encoded with its manifest's tokenizer
    (`make_tokenizer`) and written with MIND_BLENDS__*."""
    try:
        validate_name(name, kind="blend or asset name")
    except InvalidNameError as error:
        raise PublishError(str(error)) from error
    data_dir, blends_dir = settings.data_dir, settings.blends_dir
    publishing = Publishing(data_dir, settings.prompts_dir, make_counter, out_dir, tags)
    spec, manifest = blend_spec_path(blends_dir, name), manifest_path(data_dir, name)
    has_spec = blend_spec_exists(blends_dir, name)
    is_blend = has_spec or output_exists(manifest)
    if name in PUBLISHABLE:
        if is_blend:
            raise PublishError(
                f"{name!r} names both an asset and a blend ({spec if has_spec else manifest})"
                "; rename the blend"
            )
        return publish_family(name, publishing)
    if not is_blend:
        known = blend_names(blends_dir)
        raise PublishError(
            f"unknown blend or asset {name!r}: no blend spec {spec}, no manifest {manifest}, "
            f"and no asset of that name (blend specs in {blends_dir}: "
            f"{', '.join(known) or 'none'}; publishable assets: {', '.join(sorted(PUBLISHABLE))})"
        )
    return publish_blend(
        name,
        publishing,
        blends_dir=blends_dir,
        make_tokenizer=make_tokenizer,
        export_options=settings.blends,
    )
