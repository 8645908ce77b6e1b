"""`mind gc`: the output versions and leftovers nothing needs any more, deleted only on request.

A version is needed while a current pointer names it or any blend manifest pins it (its source
files, and the upstream partitions it records in `pinned`). Everything else under a `.versions`
directory is garbage, as are temporary files of killed writes and staging directories of killed
exports and publishes (the data-root gateway finds them). Nothing younger than `older_than` is
touched: a write in flight has a version on disk for a moment before its pointer moves.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mind_assets.blends.manifest import manifest_from_json
from mind_assets.lib.storage import (
    Leftover,
    blend_manifest_files,
    current_versions,
    delete_leftovers,
    leftovers,
    read_json,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_OLDER_THAN = "1h"


def parse_duration(text: str) -> float:
    """Seconds in '30d', '12h', '45m', '90s' or '0'."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use a number with s, m, h or d (e.g. 30d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def needed_versions(data_dir: Path) -> set[str]:
    """Normalised paths of every version a current pointer or a blend manifest refers to."""
    needed = current_versions(data_dir)
    for manifest_path in blend_manifest_files(data_dir):
        payload = read_json(manifest_path)
        manifest = manifest_from_json(payload)
        for phase in manifest.phases:
            for source in phase.sources:
                for f in source.files:
                    needed.add(os.path.normpath(f.resolve(data_dir)))
        for entry in payload.get("pinned", []):
            if entry.get("path"):
                needed.add(os.path.normpath(data_dir / entry["path"]))
    return needed


def find_garbage(data_dir: Path, older_than_s: float) -> list[Leftover]:
    return leftovers(data_dir, needed_versions(data_dir), older_than_s)


def collect(data_dir: Path, older_than_s: float, *, apply: bool) -> list[Leftover]:
    """The garbage found; with `apply`, deleted as well."""
    garbage = find_garbage(data_dir, older_than_s)
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
