"""`mind gc`: the output versions and leftovers nothing needs any more, deleted only on request.

A version is needed while a current pointer names it or a retained blend version pins it (its
source files, and the upstream partitions it records in `pinned`). A blend version (a manifest
version) is retained while it is current, tagged, held by an export or published folder, or
among the newest `MIND_BLENDS__KEEP_VERSIONS` untagged ones; older ones are garbage themselves,
and with them every output version only they pinned. Everything else under a `.versions`
directory is garbage, as are temporary files of killed writes and staging directories of killed
exports and publishes (the data-root gateway finds them). Nothing younger than `older_than` is
touched: a write in flight has a version on disk for a moment before its pointer moves.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import yaml

from mind_assets.blends.manifest import Manifest, manifest_from_json
from mind_assets.blends.release import releases
from mind_assets.blends.versions import (
    BlendRef,
    current_version_id,
    load_manifest_version,
    read_tags,
    retained,
    version_ids,
)
from mind_assets.lib.storage import (
    Leftover,
    blend_manifest_files,
    current_versions,
    delete_leftovers,
    is_version,
    leftovers,
    list_outputs,
    list_versions,
    published_root,
    read_json,
    read_text,
    stored_leftovers,
    version_id,
)
from mind_assets.settings import BlendSettings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_OLDER_THAN = "1h"


def parse_duration(text: str) -> float:
    """Seconds in '30d', '12h', '45m', '90s' or '0'."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use a number with s, m, h or d (e.g. 30d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def published_versions(data_dir: Path) -> set[str]:
    """`blend@version` of every published folder under the data root (its card says which)."""
    found = set()
    for card in list_outputs(published_root(data_dir), "*/README.md"):
        text = read_text(card) or ""
        if text.startswith("---\n"):
            front = yaml.safe_load(text.split("\n---\n", 1)[0][4:]) or {}
            if isinstance(front, dict) and front.get("blend_version"):
                found.add(str(front["blend_version"]))
    return found


def retained_manifests(data_dir: Path, keep: int) -> tuple[list[Manifest], list[Path]]:
    """(every retained blend version's manifest, the manifest files retention keeps), over
    every blend built under the data root; a manifest from before versions counts as current."""
    held = set(releases(data_dir)) | published_versions(data_dir)
    manifests, kept = [], []
    for pointer in blend_manifest_files(data_dir):
        blend = pointer.parent.name
        versions = version_ids(data_dir, blend)
        if not versions:  # written before manifests were versioned
            manifests.append(manifest_from_json(read_json(pointer)))
            kept.append(pointer)
            continue
        referenced = {ref.split("@", 1)[1] for ref in held if ref.startswith(f"{blend}@")}
        keep_these = retained(
            versions,
            current_version_id(data_dir, blend),
            read_tags(data_dir, blend),
            keep,
            referenced,
        )
        for path in list_versions(pointer):
            if version_id(path) in keep_these:
                kept.append(path)
                manifests.append(load_manifest_version(data_dir, BlendRef(blend, version_id(path))))
    return manifests, kept


def needed_versions(data_dir: Path, keep: int) -> set[str]:
    """Normalised paths of every version a current pointer or a retained blend version refers
    to, the retained manifest versions themselves included."""
    needed = current_versions(data_dir)
    manifests, kept = retained_manifests(data_dir, keep)
    needed |= {os.path.normpath(p) for p in kept}
    for manifest in manifests:
        for phase in manifest.phases:
            for source in phase.sources:
                for f in source.files:
                    needed.add(os.path.normpath(f.resolve(data_dir)))
        for entry in manifest.pinned:
            if entry.get("path"):
                needed.add(os.path.normpath(data_dir / entry["path"]))
    return needed


def find_garbage(
    data_dir: Path, older_than_s: float, keep: int = BlendSettings().keep_versions
) -> list[Leftover]:
    """Garbage in the working copy and, under an object store, in the store: the same rules
    (a version no retained blend version or current pointer needs, leftovers of killed writes)
    and the same age floor for both."""
    needed = needed_versions(data_dir, keep)
    found = leftovers(data_dir, needed, older_than_s) + stored_leftovers(
        data_dir, needed, older_than_s
    )
    manifests = data_dir / "blend_manifest"
    return [
        dataclasses.replace(g, kind=g.kind.replace("version", "blend version"))
        if is_version(g.path) and g.path.is_relative_to(manifests)
        else g
        for g in found
    ]


def collect(
    data_dir: Path,
    older_than_s: float,
    *,
    apply: bool,
    keep: int = BlendSettings().keep_versions,
) -> list[Leftover]:
    """The garbage found; with `apply`, deleted as well."""
    garbage = find_garbage(data_dir, older_than_s, keep)
    if apply:
        delete_leftovers(garbage)
    return garbage


def format_garbage(garbage: list[Leftover], data_dir: Path, *, applied: bool) -> str:
    if not garbage:
        return f"nothing to collect under {data_dir}"
    lines = [
        f"{g.kind:15} {g.bytes:>12,d} B  {g.age_s / 3600:8.1f} h  {g.path.relative_to(data_dir)}"
        for g in sorted(garbage, key=lambda g: str(g.path))
    ]
    total = sum(g.bytes for g in garbage)
    verb = "deleted" if applied else "would delete (dry run; --apply deletes)"
    lines.append(f"{verb}: {len(garbage)} item(s), {total:,d} bytes")
    return "\n".join(lines)
