"""Where asset files live under the data root, and how they are written without half-states.

Every writer goes through a temporary file in the destination directory and an atomic rename,
so a crash never leaves a partial parquet where a reader could find it.

Asset outputs are also immutable versions: `<dir>/<name>` is a relative symbolic link (the
"current" pointer) to `<dir>/.versions/<name>/<UTC time>-<sha256 prefix><suffix>`. A new
materialization writes a new version and swaps the link atomically; readers open `<dir>/<name>`
as before and manifests pin the version file, so regeneration never deletes or swaps what a
blend references. Only `mind gc --apply` deletes versions, and only unreferenced ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mind_assets.lib import object_store

# Partition keys become path components, so they must be plain names.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class InvalidNameError(ValueError):
    """A shard, blend or partition name that cannot safely become a path component."""


def validate_name(name: str, *, kind: str = "name") -> str:
    """Return `name` if it is a safe single path component, else raise InvalidNameError."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise InvalidNameError(
            f"invalid {kind} {name!r}: use 1-128 letters, digits, '_', '-' or '.', starting with "
            "a letter or digit (no '/', no '..'), so it cannot escape the data root"
        )
    return name


def asset_path(
    data_dir: Path, asset_key: str, *partition_dims: str, suffix: str = ".parquet"
) -> Path:
    """`<data_dir>/<asset_key>/<dim1>/<dim2>...<suffix>`, refusing anything that escapes."""
    parts = [validate_name(p, kind="partition key") for p in partition_dims]
    if not parts:
        return data_dir / f"{asset_key}{suffix}"
    path = data_dir.joinpath(asset_key, *parts[:-1], parts[-1] + suffix)
    root = data_dir.resolve()
    if root not in path.resolve().parents:
        raise InvalidNameError(f"{path} is outside the data root {root}")
    return path


@contextlib.contextmanager
def atomic_path(final_path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; rename it into place only on success."""
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final_path.name}.", suffix=".tmp", dir=final_path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        os.replace(tmp_path, final_path)
        object_store.push(final_path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet_atomic(table: pa.Table, final_path: Path) -> Path:
    """Write `table` to `final_path` atomically (zstd-compressed)."""
    with atomic_path(final_path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return final_path


VERSIONS_DIRNAME = object_store.VERSIONS_DIRNAME


def versions_dir(final_path: Path) -> Path:
    """Where the versions of the output `final_path` live."""
    return final_path.parent / VERSIONS_DIRNAME / final_path.name


def current_version(final_path: Path) -> Path:
    """The version file `final_path` points at (itself when it is a plain file from before
    outputs were versioned)."""
    if final_path.is_symlink():
        return Path(os.path.normpath(final_path.parent / os.readlink(final_path)))
    return final_path


def output_of(path: Path) -> Path:
    """The output a version file belongs to (`<dir>/.versions/<name>/<version>` -> `<dir>/<name>`);
    any other path is returned as it is."""
    if path.parent.parent.name == VERSIONS_DIRNAME:
        return path.parent.parent.parent / path.parent.name
    return path


def write_parquet_version(table: pa.Table, final_path: Path) -> Path:
    """Write `table` as a new immutable version of `final_path` and point `final_path` at it.

    The version is written under a temporary name and renamed once complete; the pointer is a
    new symbolic link renamed over the old one. A reader sees the old version or the new one,
    never a partial file, and the old version stays on disk for whoever pinned it.
    """
    directory = versions_dir(final_path)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final_path.suffixes[-1:])
    fd, tmp_name = tempfile.mkstemp(prefix=".incoming.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        pq.write_table(table, tmp, compression="zstd")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        version = directory / f"{stamp}-{sha256_file(tmp)[:16]}{suffix}"
        os.replace(tmp, version)
        object_store.push(version)  # before the pointer names it
    finally:
        if tmp.exists():
            tmp.unlink()
    _keep_unversioned(final_path)
    point_at(final_path, version)
    return final_path


def point_at(final_path: Path, version: Path, *, push: bool = True) -> None:
    """Atomically make `final_path` a relative link to `version` (and, under an object store's
    working copy, move the store's pointer too unless `push` is off)."""
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final_path.name}.", suffix=".link.tmp", dir=final_path.parent
    )
    os.close(fd)
    os.unlink(tmp_name)
    os.symlink(os.path.relpath(version, final_path.parent), tmp_name)
    try:
        os.replace(tmp_name, final_path)
    finally:
        if os.path.lexists(tmp_name):
            os.unlink(tmp_name)
    if push:
        object_store.push(final_path)


def _keep_unversioned(final_path: Path) -> None:
    """A plain file written before outputs were versioned becomes a version (hard-linked, so
    it never disappears from `final_path` before the new link replaces it)."""
    if final_path.is_symlink() or not final_path.is_file():
        return
    mtime = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(final_path.stat().st_mtime))
    kept = versions_dir(final_path) / (
        f"{mtime}-{sha256_file(final_path)[:16]}{''.join(final_path.suffixes[-1:])}"
    )
    if not kept.exists():
        os.link(final_path, kept)


class OutputReadError(ValueError):
    """An upstream output file that cannot be read; the message names the file."""


def read_output(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read an upstream output, failing with the file's name (and the version its pointer names)
    instead of a bare Arrow error, so a truncated or damaged file is found at once. Under an
    object store's working copy the store's current version is pulled first."""
    object_store.pull(path)
    if not path.is_file():
        raise OutputReadError(f"{path} is missing: materialize its asset first")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as error:
        version = current_version(path)
        where = f"{path} (version {version.name})" if version != path else str(path)
        raise OutputReadError(
            f"{where} is not a readable parquet file ({error}); rematerialize that partition"
        ) from error


def write_json_atomic(payload: Any, final_path: Path) -> Path:
    with atomic_path(final_path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return final_path


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
