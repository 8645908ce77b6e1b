"""The licences of published rows, from what the platform knows about where their text came from.

A published row is text from a source document, or text a model wrote from one (a conversation,
a Q&A item, a solution trace), so each blend source or published config carries the licences of
the root rows it derives from (raw documents, task seeds, math problems), found along the parent
links the output families declare. Origins nobody recorded a licence for are reported, never
guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc

from mind_assets.blends.families import family
from mind_assets.blends.manifest import Manifest
from mind_assets.lib.outputs import Keys, OutputFamily
from mind_assets.lib.storage import output_exists, read_output, read_output_schema

# The Hub's id for a licence the platform cannot name.
UNKNOWN_LICENCE = "other"


@dataclass(frozen=True)
class KnownOrigin:
    """A body of text whose licence is known, recognised by markers in where rows came from
    (a document's url or `source`, a task family, a math source or its dataset path)."""

    name: str
    licence: str  # Hugging Face Hub licence id
    markers: tuple[str, ...]


# Add an entry here when a corpus with a known licence is registered; an origin that matches none
# is published as `other` and listed in the card.
KNOWN_ORIGINS: tuple[KnownOrigin, ...] = (
    KnownOrigin(
        "An Infinitely Large Napkin by Evan Chen (github.com/vEnhance/napkin)",
        "cc-by-sa-4.0",
        ("github.com/vEnhance/napkin", "napkin/sections.jsonl"),
    ),
    KnownOrigin(
        "GSM8K (openai/grade-school-math, hf:openai/gsm8k)",
        "mit",
        ("openai/gsm8k", "grade-school-math", "gsm8k"),
    ),
    KnownOrigin(
        "the mind-assets demo corpus, written for this project",
        "apache-2.0",
        ("demo_corpus.jsonl",),
    ),
)


def match_origin(origin: str, known: Sequence[KnownOrigin] = KNOWN_ORIGINS) -> KnownOrigin | None:
    lowered = origin.lower()
    for candidate in known:
        if any(marker.lower() in lowered for marker in candidate.markers):
            return candidate
    return None


@dataclass
class SourceLicences:
    """The licences behind one blend source, and the origins no licence is known for."""

    source: str
    origins: dict[str, str] = field(default_factory=dict)  # known origin name -> licence id
    unknown: list[str] = field(default_factory=list)  # up to a few examples
    unknown_count: int = 0
    _seen_unknown: set[str] = field(default_factory=set, repr=False)

    @property
    def licences(self) -> list[str]:
        ids = set(self.origins.values())
        if self.unknown_count:
            ids.add(UNKNOWN_LICENCE)
        return sorted(ids)


_UNKNOWN_EXAMPLES = 5
# Where a root row (a raw document, a problem) says it came from, best first: a row's origin is
# the first of these it fills.
ORIGIN_COLUMNS = ("url", "dataset", "source")

Pinned = Mapping[tuple[str, str], Path]  # (asset, partition) -> the version file to read


def root_origins(root: OutputFamily, keys: Keys, path: Path) -> list[str]:
    """Distinct origins of a root partition's rows (its url, dataset or source column); a
    partition whose rows record none is named by itself (`task_seeds[gsm8k]`)."""
    partition = f"{root.name}[{root.partition_key(keys)}]"
    if not output_exists(path):
        return [f"{partition} (missing: its rows' origins cannot be read)"]
    columns = [c for c in ORIGIN_COLUMNS if c in read_output_schema(path).names]
    if not columns:
        return [partition]
    table = read_output(path, columns=columns)
    origin = pc.coalesce(*(table[c] for c in columns)) if len(columns) > 1 else table[columns[0]]
    origins = sorted(v for v in pc.unique(origin).to_pylist() if v)
    return origins or [f"{partition} ({', '.join(columns)} empty)"]


def origins_of(
    declared: OutputFamily, keys: Keys, data_dir: Path, pinned: Pinned | None = None
) -> list[str]:
    """The origins of every root partition a partition derives from, as its family declares
    its parents; each root read at its pinned version when one is given."""
    origins: list[str] = []
    seen: set[tuple[str, str]] = set()
    for upstream, upstream_keys in declared.upstream(keys):
        key = (upstream.name, upstream.partition_key(upstream_keys))
        if not upstream.is_root or key in seen:
            continue
        seen.add(key)
        path = (pinned or {}).get(key) or upstream.path(data_dir, upstream_keys)
        origins += root_origins(upstream, upstream_keys, path)
    return list(dict.fromkeys(origins))


def licences_of(
    groups: Mapping[str, Sequence[tuple[OutputFamily, Keys]]],
    data_dir: Path,
    pinned: Pinned | None = None,
    known: Sequence[KnownOrigin] = KNOWN_ORIGINS,
) -> list[SourceLicences]:
    """Per group of partitions (a blend source, a published config), in the given order, the
    licences of the origins its rows derive from."""
    result = []
    for name, partitions in groups.items():
        licences = SourceLicences(name)
        for declared, keys in partitions:
            for origin in origins_of(declared, keys, data_dir, pinned):
                match = match_origin(origin, known)
                if match is not None:
                    licences.origins[match.name] = match.licence
                elif origin not in licences._seen_unknown:
                    licences._seen_unknown.add(origin)
                    licences.unknown_count += 1
                    if len(licences.unknown) < _UNKNOWN_EXAMPLES:
                        licences.unknown.append(origin)
        result.append(licences)
    return result


def blend_licences(
    manifest: Manifest, data_dir: Path, known: Sequence[KnownOrigin] = KNOWN_ORIGINS
) -> list[SourceLicences]:
    """Per blend source (in manifest order, each name once), the licences of its origins, every
    root read at the version the manifest pinned."""
    groups: dict[str, list[tuple[OutputFamily, Keys]]] = {}
    pinned: dict[tuple[str, str], Path] = {
        (entry["asset"], entry["partition"]): data_dir / entry["path"]
        for entry in manifest.pinned
        if entry.get("asset") and entry.get("partition") and entry.get("path")
    }
    for phase in manifest.phases:
        for source in phase.sources:
            group = groups.setdefault(source.name, [])
            for f in source.files:
                declared = family(f.asset)
                group.append((declared, declared.keys(f.partition)))
                pinned[(f.asset, f.partition)] = f.resolve(data_dir)
    return licences_of(groups, data_dir, pinned, known)


def card_licence(per_source: Sequence[SourceLicences]) -> str | list[str]:
    """The card's `license` field: one id when every source agrees, else the list of them."""
    ids = sorted({licence for s in per_source for licence in s.licences}) or [UNKNOWN_LICENCE]
    return ids[0] if len(ids) == 1 else ids
