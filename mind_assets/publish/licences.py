"""The licences of a blend's inputs, from what the platform knows about where its text came from.

A published row is text from a source document, or text a model wrote from one (a conversation,
a Q&A item, a solution trace), so each blend source carries the licences of the documents or
datasets it derives from. Origins nobody recorded a licence for are reported, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from mind_assets.blends.manifest import Manifest, ResolvedSource
from mind_assets.lib.storage import InvalidNameError, asset_path
from mind_assets.math_traces.sources import MathSource

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


def _document_origins(path: Path) -> Iterable[str]:
    """Distinct urls and `source` values of a raw_documents file; a row with neither is
    identified by the file itself."""
    if not path.is_file():
        return [f"{path} (missing: its documents' origins cannot be read)"]
    names = pq.read_schema(path).names
    columns = [c for c in ("url", "source") if c in names]
    if not columns:
        return [f"{path} (no url or source column)"]
    table = pq.read_table(path, columns=columns)
    origins: set[str] = set()
    for column in columns:
        origins.update(v for v in pc.unique(table[column]).to_pylist() if v)
    return sorted(origins) or [f"{path} (url and source empty)"]


def _raw_documents_file(manifest: Manifest, data_dir: Path, shard: str) -> Path:
    """The shard's raw_documents version the manifest pinned, else its current file."""
    for entry in manifest.pinned:
        if (entry.get("asset"), entry.get("partition")) == ("raw_documents", shard) and entry.get(
            "path"
        ):
            return data_dir / entry["path"]
    try:
        return asset_path(data_dir, "raw_documents", shard)
    except InvalidNameError:
        return data_dir / "raw_documents" / f"{shard}.parquet (invalid shard name)"


def _origins(
    manifest: Manifest,
    source: ResolvedSource,
    data_dir: Path,
    math_sources: Sequence[MathSource],
) -> list[str]:
    origins: list[str] = []
    for f in source.files:
        key = f.partition.split("|")[0]
        if f.asset == "raw_documents":
            origins += _document_origins(f.resolve(data_dir))
        elif f.asset in ("filtered_conversations", "longest_conversations"):
            origins += _document_origins(_raw_documents_file(manifest, data_dir, key))
        elif f.asset == "task_qa":
            origins.append(f"lm-eval task family {key}")
        elif f.asset == "solution_traces":
            paths = [m.dataset_path for m in math_sources if m.name == key]
            origins.append(f"math source {key}" + (f" ({paths[0]})" if paths else ""))
        else:
            origins.append(f"{f.asset}[{f.partition}]")
    return list(dict.fromkeys(origins))


def blend_licences(
    manifest: Manifest,
    data_dir: Path,
    math_sources: Sequence[MathSource] = (),
    known: Sequence[KnownOrigin] = KNOWN_ORIGINS,
) -> list[SourceLicences]:
    """Per blend source (in manifest order, each name once), the licences of its origins."""
    result: dict[str, SourceLicences] = {}
    for phase in manifest.phases:
        for source in phase.sources:
            licences = result.setdefault(source.name, SourceLicences(source.name))
            for origin in _origins(manifest, source, data_dir, math_sources):
                match = match_origin(origin, known)
                if match is not None:
                    licences.origins[match.name] = match.licence
                elif origin not in licences._seen_unknown:
                    licences._seen_unknown.add(origin)
                    licences.unknown_count += 1
                    if len(licences.unknown) < _UNKNOWN_EXAMPLES:
                        licences.unknown.append(origin)
    return list(result.values())


def card_licence(per_source: Sequence[SourceLicences]) -> str | list[str]:
    """The card's `license` field: one id when every source agrees, else the list of them."""
    ids = sorted({licence for s in per_source for licence in s.licences}) or [UNKNOWN_LICENCE]
    return ids[0] if len(ids) == 1 else ids
