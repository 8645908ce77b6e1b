"""Blend versions: every manifest build is an immutable version, named `<blend>@<version>`, and
tags pin versions a trainer used.

A manifest is an output like any other: each build writes a new version of
`blend_manifest/<blend>/manifest.json` (the version's id is its UTC time and content hash) and
moves the current pointer, so the manifest a trainer's data came from is never overwritten. A
reference `keep` means the current version, `keep@20261205T153000123456Z-3f2a9c01b2d4e5f6` (or any
unique prefix of the id) one version. Tags (`mind blends tag keep@... trained-run-42`) live in
`blend_manifest/<blend>/tags.json` and pin a version for as long as they exist; retention keeps
the newest `MIND_BLENDS__KEEP_VERSIONS` untagged versions besides, and `mind gc` deletes the
rest only with `--apply` (the lakeFS/Iceberg model: commits and snapshots expire, tags do not).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mind_assets.blends.manifest import Manifest, manifest_from_json
from mind_assets.lib.storage import (
    blend_manifest_dir,
    blend_manifest_file,
    current_version,
    list_versions,
    output_exists,
    output_sha256,
    read_json,
    validate_name,
    version_id,
    write_json_atomic,
    write_json_version,
)

TAGS_FILE = "tags.json"


class BlendVersionError(ValueError):
    """A blend reference that names no version there is; the message lists those there are."""


@dataclass(frozen=True)
class BlendRef:
    """`blend` or `blend@version`."""

    blend: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> BlendRef:
        blend, _, version = text.partition("@")
        validate_name(blend, kind="blend name")
        if version:
            validate_name(version, kind="blend version")
        return cls(blend, version or None)

    def __str__(self) -> str:
        return f"{self.blend}@{self.version}" if self.version else self.blend


def version_ids(data_dir: Path, blend: str) -> list[str]:
    """Every manifest version of a blend, oldest first."""
    return [version_id(p) for p in list_versions(blend_manifest_file(data_dir, blend))]


def current_version_id(data_dir: Path, blend: str) -> str | None:
    """The version the blend's manifest points at now; None when the blend was never built (or
    was built before manifests were versioned)."""
    pointer = blend_manifest_file(data_dir, blend)
    if not output_exists(pointer):
        return None
    version = current_version(pointer)
    if version != pointer:
        return version_id(version)
    # A plain file where the link was: a data root copied with its links followed. The current
    # version is the one with the same content (its name carries the content's hash).
    digest = output_sha256(pointer)[:16]
    same = [p for p in list_versions(pointer) if version_id(p).endswith(f"-{digest}")]
    return version_id(same[-1]) if same else None


def resolve(data_dir: Path, ref: BlendRef) -> str | None:
    """The full version id `ref` names: its version (an id or a unique prefix of one), else
    the current version."""
    if ref.version is None:
        return current_version_id(data_dir, ref.blend)
    known = version_ids(data_dir, ref.blend)
    matches = [v for v in known if v.startswith(ref.version)]
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(known[-10:]) or "none (materialize blend_manifest first)"
    if matches:
        raise BlendVersionError(f"{ref} is ambiguous: it starts {len(matches)} versions")
    raise BlendVersionError(f"blend {ref.blend!r} has no version {ref.version!r}; known: {shown}")


def load_manifest_version(data_dir: Path, ref: BlendRef) -> Manifest:
    """The manifest `ref` names, with its version set; an error naming what is there."""
    version = resolve(data_dir, ref)
    pointer = blend_manifest_file(data_dir, ref.blend)
    if version is None:
        payload = read_json(pointer)  # a manifest from before versions, or none
        if payload is None:
            raise FileNotFoundError(
                f"blend {ref.blend!r} has no manifest at {pointer}: "
                f"materialize blend_manifest[{ref.blend}]"
            )
        return manifest_from_json(payload)
    path = next(p for p in list_versions(pointer) if version_id(p) == version)
    return manifest_from_json(read_json(path), version=version)


def save_manifest_version(data_dir: Path, manifest: Manifest) -> Path:
    """Write `manifest` as a new version of its blend and make it current; sets
    `manifest.version` and returns the version file."""
    version = write_json_version(manifest.to_json(), blend_manifest_file(data_dir, manifest.blend))
    manifest.version = version_id(version)
    return version


def tags_file(data_dir: Path, blend: str) -> Path:
    return blend_manifest_dir(data_dir, blend) / TAGS_FILE


def read_tags(data_dir: Path, blend: str) -> dict[str, str]:
    """label -> version id."""
    return dict(read_json(tags_file(data_dir, blend)) or {})


def tag(data_dir: Path, ref: BlendRef, label: str) -> str:
    """Pin the version `ref` names under `label` (a label already there is moved); returns the
    version id."""
    validate_name(label, kind="tag")
    version = resolve(data_dir, ref)
    if version is None:
        raise BlendVersionError(f"blend {ref.blend!r} has no manifest version to tag")
    tags = read_tags(data_dir, ref.blend)
    tags[label] = version
    write_json_atomic(tags, tags_file(data_dir, ref.blend))
    return version


@dataclass
class VersionInfo:
    """One manifest version as `mind blends versions` lists it."""

    version: str
    created_at: str
    tokens: int
    sources: int
    current: bool
    tags: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)  # folders that hold an export of it


def retained(
    ids: list[str], current: str | None, tags: dict[str, str], keep: int, referenced: set[str]
) -> set[str]:
    """The versions retention keeps: the current one, every tagged one, every one an existing
    export or published folder was made from, and the newest `keep` of the rest."""
    pinned = {current, *tags.values(), *referenced} - {None}
    untagged = [v for v in ids if v not in pinned]
    return {v for v in ids if v in pinned} | set(untagged[-keep:] if keep > 0 else [])


def version_infos(data_dir: Path, blend: str, exports: dict[str, list[str]]) -> list[VersionInfo]:
    """Every version of `blend`, oldest first, with its tags and the folders exported from it
    (`exports`: version id -> folders)."""
    pointer = blend_manifest_file(data_dir, blend)
    current = current_version_id(data_dir, blend)
    by_version: dict[str, list[str]] = {}
    for label, version in read_tags(data_dir, blend).items():
        by_version.setdefault(version, []).append(label)
    infos = []
    for path in list_versions(pointer):
        payload: dict[str, Any] = read_json(path) or {}
        version = version_id(path)
        infos.append(
            VersionInfo(
                version=version,
                created_at=str(payload.get("created_at", "")),
                tokens=int(payload.get("total_tokens", 0)),
                sources=sum(len(p.get("sources", [])) for p in payload.get("phases", [])),
                current=version == current,
                tags=sorted(by_version.get(version, [])),
                exports=sorted(exports.get(version, [])),
            )
        )
    return infos


def format_versions(blend: str, infos: Iterable[VersionInfo]) -> str:
    rows = [
        f"{'*' if i.current else ' '} {blend}@{i.version}  {i.created_at[:19]:19}  "
        f"{i.tokens:>12,d} tokens  {i.sources} source(s)"
        + (f"  tags: {', '.join(i.tags)}" if i.tags else "")
        + (f"  exported to: {', '.join(i.exports)}" if i.exports else "")
        for i in infos
    ]
    return "\n".join(rows) or f"blend {blend!r} has no manifest versions yet"
