"""`mind gc`: the output versions and leftovers nothing needs any more, deleted only on request.

A version is needed while a current pointer names it or any blend manifest pins it (its source
files, and the upstream partitions it records in `pinned`). Everything else under a `.versions`
directory is garbage, as are temporary files of killed writes and staging directories of killed
exports and publishes. Nothing younger than `older_than` is touched: a write in flight has a
version on disk for a moment before its pointer moves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mind_assets.blends.manifest import manifest_from_json
from mind_assets.lib.storage import VERSIONS_DIRNAME, current_version

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_OLDER_THAN = "1h"
# Leftover directories of killed exports and publishes, deleted as whole trees.
STAGING_KINDS = ("export staging", "publish staging")


@dataclass(frozen=True)
class Garbage:
    path: Path
    kind: str  # "version", "temp file", "export staging" or "publish staging"
    bytes: int
    age_s: float


def parse_duration(text: str) -> float:
    """Seconds in '30d', '12h', '45m', '90s' or '0'."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use a number with s, m, h or d (e.g. 30d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def needed_versions(data_dir: Path) -> set[str]:
    """Normalised paths of every version a current pointer or a blend manifest refers to."""
    needed: set[str] = set()
    for manifest_path in sorted((data_dir / "blend_manifest").glob("*/manifest.json")):
        payload = json.loads(manifest_path.read_text())
        manifest = manifest_from_json(payload)
        for phase in manifest.phases:
            for source in phase.sources:
                for f in source.files:
                    needed.add(os.path.normpath(f.resolve(data_dir)))
        for entry in payload.get("pinned", []):
            if entry.get("path"):
                needed.add(os.path.normpath(data_dir / entry["path"]))
    for directory, dirnames, filenames in os.walk(data_dir):
        dirnames[:] = [d for d in dirnames if d != VERSIONS_DIRNAME]
        for name in filenames + dirnames:
            path = Path(directory, name)
            if path.is_symlink():
                needed.add(os.path.normpath(current_version(path)))
    return needed


def find_garbage(data_dir: Path, older_than_s: float) -> list[Garbage]:
    now = time.time()
    needed = needed_versions(data_dir)
    found = []
    for path, kind in _candidates(data_dir):
        stat = path.lstat()
        age = now - stat.st_mtime
        if age < older_than_s:
            continue
        if kind == "version" and os.path.normpath(path) in needed:
            continue
        size = _tree_size(path) if kind in STAGING_KINDS else stat.st_size
        found.append(Garbage(path, kind, size, age))
    return found


def _candidates(data_dir: Path) -> Iterator[tuple[Path, str]]:
    for directory, dirnames, filenames in os.walk(data_dir):
        here = Path(directory)
        in_versions = here.parent.name == VERSIONS_DIRNAME
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                yield here / name, "temp file"
            elif in_versions:
                yield here / name, "version"
        if here.parent.name == "blend_exports":
            # Exports stage into '.<phase>.*' / '.megatron.*' directories renamed when complete.
            staging = [d for d in dirnames if d.startswith(".")]
            dirnames[:] = [d for d in dirnames if d not in staging]
            for name in staging:
                yield here / name, "export staging"
        if here == data_dir / "published":
            # `mind publish` stages into '.<blend>.staging.*' and moves the folder it replaces
            # into '.<blend>.old.*' until the new one is in place.
            staging = [d for d in dirnames if d.startswith(".")]
            dirnames[:] = [d for d in dirnames if d not in staging]
            for name in staging:
                yield here / name, "publish staging"


def _tree_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*"))


def collect(data_dir: Path, older_than_s: float, *, apply: bool) -> list[Garbage]:
    """The garbage found; with `apply`, deleted as well."""
    garbage = find_garbage(data_dir, older_than_s)
    if apply:
        for item in garbage:
            if item.kind in STAGING_KINDS:
                shutil.rmtree(item.path, ignore_errors=True)
            else:
                item.path.unlink(missing_ok=True)
    return garbage


def format_garbage(garbage: list[Garbage], data_dir: Path, *, applied: bool) -> str:
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
