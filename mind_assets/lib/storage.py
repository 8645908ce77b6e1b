"""The one door to the data root: where every file the platform keeps lives, and the only module
that reads or writes them.

Only this module knows the layout under `MIND_DATA_DIR`: asset outputs and their versions and
current pointers, blend manifests, blend exports, published folders, request batches, metric
partitions, shard specs and feature caches. Stages ask it for a place (`blend_export_dir`,
`requests_dir`, an output family's path) and read and write through it (`read_output`,
`output_exists`, `write_parquet_version`, `read_json`, `replace_dir`, ...), never with their own
`pq.read_table`, `path.is_file()` or staging swap; `mind_assets_tests/test_import_graph.py`
holds every other module to that.

Writes never leave half-states. A plain file is written to a temporary file beside it and
renamed into place. An asset output is an immutable version:
`<dir>/<name>` is a relative symbolic link (the current pointer) to
`<dir>/.versions/<name>/<UTC time>-<sha256 prefix><suffix>`; a new materialization writes a new
version and swaps the link, so regeneration never deletes or swaps what a blend manifest pins
(only `mind gc --apply` deletes versions, and only unreferenced ones). A directory built whole
(an export, a published folder) is staged beside its destination and swapped in once complete.

When the data root is an object store (`MIND_DATA_DIR=s3://...`), the directory is a local
working copy and the store is the data root of record (`object_store.py`, the transport beneath
this module): every committed write is pushed at once (a version create-only, then its pointer,
the small object `<dir>/.versions/<name>/CURRENT` naming it, so a reader never follows a pointer
to a missing object), and every read pulls first (one GET for the pointer, the version only when
it is not here yet), so a process that starts with an empty working copy, as a pod does, reads
what other processes wrote.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mind_assets.lib import object_store

VERSIONS_DIRNAME = ".versions"  # where the versions of an output live, beside it
POINTER_NAME = "CURRENT"  # in an object store: the object naming an output's current version
# Rows per parquet row group: a streaming reader decodes one group's pages at a time.
ROW_GROUP_ROWS = 16_384
READ_BUFFER_BYTES = 1 << 20  # read-ahead of a streaming parquet reader

# Partition keys become path components, so they must be plain names.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class InvalidNameError(ValueError):
    """A shard, blend or partition name that cannot safely become a path component."""


class OutputReadError(ValueError):
    """An output file that is missing or cannot be read; the message names the file."""


def validate_name(name: str, *, kind: str = "name") -> str:
    """Return `name` if it is a safe single path component, else raise InvalidNameError."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise InvalidNameError(
            f"invalid {kind} {name!r}: use 1-128 letters, digits, '_', '-' or '.', starting with "
            "a letter or digit (no '/', no '..'), so it cannot escape the data root"
        )
    return name


# --- places --------------------------------------------------------------------------------------
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


def blend_manifest_dir(data_dir: Path, blend: str) -> Path:
    """Where `blend_manifest` writes one blend's manifest (json, parquet twin, weights)."""
    return asset_path(data_dir, "blend_manifest", blend, suffix="")


def blend_manifest_file(data_dir: Path, blend: str) -> Path:
    return blend_manifest_dir(data_dir, blend) / "manifest.json"


def blend_manifest_files(data_dir: Path) -> list[Path]:
    """The manifest of every blend built under the data root."""
    return [p for p in list_outputs(data_dir / "blend_manifest", "*/manifest.json")]


def blend_export_dir(data_dir: Path, blend: str, version: str | None = None) -> Path:
    """A blend's export: `blend_exports/<blend>/` for its current version,
    `blend_exports/<blend>@<version>/` for an older one re-created."""
    name = validate_name(blend, kind="blend name")
    if version is not None:
        name += f"@{validate_name(version, kind='blend version')}"
    return data_dir / "blend_exports" / name


def blend_exports_root(data_dir: Path) -> Path:
    return data_dir / "blend_exports"


def published_dir(data_dir: Path, name: str) -> Path:
    return asset_path(data_dir, "published", name, suffix="")


def published_root(data_dir: Path) -> Path:
    return data_dir / "published"


def requests_dir(data_dir: Path, asset: str, *keys: str) -> Path:
    """Where the finished request batches of one partition of a generating asset wait until
    the partition's output is written."""
    return asset_path(data_dir, REQUESTS_DIRNAME, asset, *keys, suffix="")


def metrics_dir(data_dir: Path) -> Path:
    return data_dir / "metrics"


def metrics_cache_file(data_dir: Path) -> Path:
    """The disposable DuckDB copy of the metrics: local to each machine, never uploaded."""
    return data_dir / "metrics.duckdb"


def shard_spec_file(data_dir: Path, shard: str) -> Path:
    return data_dir / "shard_specs" / f"{validate_name(shard, kind='shard name')}.json"


def shard_spec_files(data_dir: Path) -> list[Path]:
    return list_outputs(data_dir / "shard_specs", "*.json")


def feature_cache_file(data_dir: Path, name: str) -> Path:
    """Cached gradient features of a diversity target or a Prismatic pool, per row."""
    return asset_path(data_dir, "diversity_features", name)


TOKEN_CACHE_DIRNAME = "token_cache"
SCRATCH_DIRNAME = ".scratch"
EXPORT_PARTS_DIRNAME = ".parts"


def token_cache_file(data_dir: Path, fingerprint: str, version: Path, sha256: str) -> Path:
    """The token ids and counts of one output version under one tokenizer (by its fingerprint):
    `token_cache/<fingerprint[:16]>/<output path>/<sha256>.parquet`. Keyed by content, so it
    never goes stale; `mind gc` deletes it once no version of the output has that content."""
    output = output_of(version).relative_to(data_dir)
    stem = output.with_suffix("") if output.suffix else output
    return data_dir / TOKEN_CACHE_DIRNAME / fingerprint[:16] / stem / f"{sha256}.parquet"


def export_parts_dir(data_dir: Path, blend: str, key: str) -> Path:
    """Where the parts of one partitioned export wait for its last step, which puts them in
    place together: `blend_exports/.parts/<blend>/<key>/` (`key`: the version and the export's
    settings, so a step that runs again finds the parts already done)."""
    return (
        blend_exports_root(data_dir)
        / EXPORT_PARTS_DIRNAME
        / validate_name(blend, kind="blend name")
        / validate_name(key, kind="export key")
    )


def data_root_relative(path: Path, data_dir: Path) -> str:
    """`path` as manifests and exports record it: relative to the data root, '/'-separated, so a
    data root moved, copied or mounted elsewhere still resolves."""
    return path.relative_to(data_dir).as_posix()


# --- versions and pointers -----------------------------------------------------------------------
def versions_dir(final_path: Path) -> Path:
    """Where the versions of the output `final_path` live."""
    return final_path.parent / VERSIONS_DIRNAME / final_path.name


def pointer_file(final_path: Path) -> Path:
    """The store object naming the current version of `final_path` (a link on a local disk)."""
    return versions_dir(final_path) / POINTER_NAME


def is_version(path: Path) -> bool:
    return path.parent.parent.name == VERSIONS_DIRNAME and path.name != POINTER_NAME


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


def pinned_version(path: Path, sha256: str) -> Path:
    """The version a manifest pinned by content: `path` itself, or, where an older manifest
    named the current pointer, the version whose name carries `sha256`."""
    if path.is_symlink():
        for version in sorted(versions_dir(path).glob(f"*-{sha256[:16]}.*")):
            return version
    return path


def _stage_version(final_path: Path, write: Callable[[Path], None], version_id: str | None) -> Path:
    """Write a new version of `final_path` under a temporary name and rename it into
    `<dir>/.versions/<name>/<id><suffix>` once complete (the id: UTC time and the file's sha256
    prefix, unless given); the pointer is not moved."""
    directory = versions_dir(final_path)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final_path.suffixes[-1:])
    fd, tmp_name = tempfile.mkstemp(prefix=".incoming.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if version_id is None:
            version_id = f"{version_stamp()}-{sha256_file(tmp)[:16]}"
        version = directory / f"{version_id}{suffix}"
        os.replace(tmp, version)
    finally:
        if tmp.exists():
            tmp.unlink()
    return version


def version_stamp() -> str:
    """`20261205T153000123456Z`: the UTC time to the microsecond, so versions written within one
    second still sort in the order they were written."""
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}Z"


def version_id(version: Path) -> str:
    """`20261205T153000123456Z-3f2a...`: a version file's name without its suffix."""
    return version.name[: -len("".join(version.suffixes[-1:]))] if version.suffix else version.name


def write_table(table: pa.Table, path: Path) -> None:
    """A parquet file of `table`, zstd-compressed, in row groups of at most ROW_GROUP_ROWS rows
    so a reader that streams it (a blend export, the token cache) holds one group at a time."""
    pq.write_table(table, path, compression="zstd", row_group_size=ROW_GROUP_ROWS)


def write_parquet_version(table: pa.Table, final_path: Path) -> Path:
    """Write `table` as a new immutable version of `final_path` and point `final_path` at it.

    The version is written under a temporary name and renamed once complete; the pointer is a
    new symbolic link renamed over the old one. A reader sees the old version or the new one,
    never a partial file, and the old version stays on disk for whoever pinned it.
    """
    version = _stage_version(final_path, lambda tmp: write_table(table, tmp), None)
    _push(version)  # before the pointer names it
    _keep_unversioned(final_path)
    point_at(final_path, version)
    return final_path


def write_json_version(payload: Any, final_path: Path) -> Path:
    """Write a JSON document (a blend manifest) as a new immutable version of `final_path` and
    point `final_path` at it, as `write_parquet_version` does for tables; returns the version."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    version = _stage_version(final_path, lambda tmp: tmp.write_text(text), None)
    _push(version)
    point_at(final_path, version)
    return version


def write_split_versions(
    accepted: pa.Table, accepted_path: Path, quarantine: pa.Table, quarantine_path: Path
) -> Path:
    """Write a partition's accepted rows and their quarantine as one commit: both versions are
    written (and uploaded) under one id, the accepted version's, and then the accepted pointer
    moves. That move is the commit: the quarantine of a version is found by the accepted
    version's id (`quarantine_version`), so a reader never sees new accepted rows beside an
    old quarantine, whatever happens between the two pointer moves. Returns the accepted
    version."""
    written = _stage_version(accepted_path, lambda tmp: write_table(accepted, tmp), None)
    held = _stage_version(
        quarantine_path,
        lambda tmp: write_table(quarantine, tmp),
        version_id(written),
    )
    _push(held)
    _push(written)
    _keep_unversioned(accepted_path)
    _keep_unversioned(quarantine_path)
    point_at(accepted_path, written)  # the commit
    point_at(quarantine_path, held)  # for tools that open the quarantine file itself
    return written


def quarantine_version(accepted_path: Path, quarantine_path: Path) -> Path:
    """The quarantine that belongs to the accepted rows `accepted_path` points at now (or is,
    for a version file a manifest pinned): the quarantine version of the same id (pulled from
    the store when needed), or, for a partition written before accepted rows and quarantine
    were one commit, the quarantine's own pointer."""
    _pull(accepted_path)
    accepted = current_version(accepted_path)
    if accepted != accepted_path or is_version(accepted_path):  # a pointer, or a pinned version
        paired = versions_dir(quarantine_path) / f"{version_id(accepted)}{quarantine_path.suffix}"
        _pull(paired)
        if paired.is_file():
            return paired
    return quarantine_path


def list_versions(final_path: Path) -> list[Path]:
    """Every version of an output, oldest first (their names start with the UTC time they were
    written); under an object store the store is listed."""
    directory = versions_dir(final_path)
    store = object_store.store_for(directory)
    if store is None:
        found = list(directory.glob("*")) if directory.is_dir() else []
    else:
        found = store.list_files(directory)
    return sorted(p for p in found if p.name != POINTER_NAME and not p.name.startswith("."))


def point_at(final_path: Path, version: Path, *, push: bool = True) -> Path:
    """Atomically make `final_path` a relative link to `version`. Under an object store's
    working copy (unless `push` is off) the store's pointer moves first, only forward and only
    if no other writer moved it since it was read (`DataStore.advance_pointer`): when a newer
    version won the race, the local link follows that one. Returns the version linked."""
    store = object_store.store_for(final_path) if push else None
    if store is not None:
        winner = store.advance_pointer(pointer_file(final_path), version.name)
        if winner != version.name:
            version = versions_dir(final_path) / winner
            if not version.is_file():
                store.download(version, missing_ok=False)
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
    return version


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


# --- keeping the working copy and the store in step ----------------------------------------------
def _push(path: Path) -> None:
    """Upload what was just committed at `path`: a version (create-only) or a plain file (an
    output's pointer moves through `point_at`). Nothing for a local data root."""
    store = object_store.store_for(path)
    if store is not None:
        store.upload(path, create_only=is_version(path))


def _pull(path: Path) -> None:
    """Bring the store's state of `path` into the working copy: a pinned version when it is
    missing here; for an output, the version its pointer names (and the local link moved to
    it); a plain file, downloaded again. Nothing happens when the store has no such object (a
    local-only file stays as it is), nor for a local data root."""
    store = object_store.store_for(path)
    if store is None:
        return
    if is_version(path):
        if not path.is_file():
            store.download(path)
        return
    payload = store.get_bytes(pointer_file(path))
    if payload is None:
        store.download(path)
        return
    version = versions_dir(path) / payload.decode().strip()
    if not version.is_file() and not store.download(version):
        raise object_store.ObjectStoreError(
            f"{store.url_of(version)} is named by the pointer of {path.name} but missing"
        )
    if not path.is_symlink() or Path(os.readlink(path)).name != version.name:
        point_at(path, version, push=False)


def _matches(relative: Path, pattern: str) -> bool:
    """Whether a relative path matches a glob pattern part for part, at the same depth."""
    parts = Path(pattern).parts
    return len(relative.parts) == len(parts) and all(
        fnmatch.fnmatchcase(name, part) for name, part in zip(relative.parts, parts, strict=True)
    )


def list_outputs(directory: Path, pattern: str = "*.parquet") -> list[Path]:
    """The outputs and plain files under `directory` whose path relative to it matches `pattern`
    part for part (`*/*.parquet`: two levels down), sorted; temporary files, versions and other
    dot-names are left out. Under an object store the store is listed (an output's pointer
    stands for the output) and what it holds is pulled into the working copy, since callers
    read the files next."""
    store = object_store.store_for(directory)
    if store is None:
        if not directory.is_dir():
            return []
        candidates = {p for p in directory.glob(pattern) if p.is_file()}
    else:
        candidates = set()
        for path in store.list_files(directory):
            if path.name == POINTER_NAME and path.parent.parent.name == VERSIONS_DIRNAME:
                candidates.add(path.parent.parent.parent / path.parent.name)
            else:
                candidates.add(path)
    found = sorted(
        p
        for p in candidates
        if _matches(p.relative_to(directory), pattern)
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    if store is not None:
        for path in found:
            _pull(path)
    return found


def pull_tree(directory: Path) -> None:
    """Bring every file the store holds under `directory` (an export, a published folder) into
    the working copy; nothing for a local data root."""
    store = object_store.store_for(directory)
    if store is None:
        return
    for path, size in store.listing(directory).items():
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        # A file this process wrote or pulled already is not fetched again.
        if not path.is_file() or path.stat().st_size != size:
            store.download(path)


# --- reads ---------------------------------------------------------------------------------------
def output_exists(path: Path) -> bool:
    """Whether the output (or plain file) `path` exists, in the store first."""
    _pull(path)
    return path.is_file()


def read_output(path: Path, columns: list[str] | None = None, filters: Any = None) -> pa.Table:
    """Read an output, one of its versions, or any parquet file of the data root, failing with
    the file's name (and the version its pointer names) instead of a bare Arrow error, so a
    missing, truncated or damaged file is found at once. Under an object store's working copy
    the store's current version is pulled first."""
    _pull(path)
    if not path.is_file():
        raise OutputReadError(f"{path} is missing: materialize its asset first")
    try:
        return pq.read_table(path, columns=columns, filters=filters)
    except (pa.ArrowException, OSError) as error:
        version = current_version(path)
        where = f"{path} (version {version.name})" if version != path else str(path)
        raise OutputReadError(
            f"{where} is not a readable parquet file ({error}); rematerialize that partition"
        ) from error


def iter_output_batches(
    path: Path, columns: list[str] | None, batch_size: int
) -> Iterator[pa.Table]:
    """An output read `batch_size` rows at a time, in order (the last batch may be shorter), so
    a file bigger than memory streams; a damaged file is an error naming it."""
    _pull(path)
    if not path.is_file():
        raise OutputReadError(f"{path} is missing: materialize its asset first")
    try:
        # Buffered, not pre-buffered: pages are read as the batches need them, so memory is
        # bounded by the batch even when the file is one big row group.
        source = pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
        held: list[pa.RecordBatch] = []
        rows = 0
        for batch in source.iter_batches(batch_size=batch_size, columns=columns):
            held.append(batch)
            rows += batch.num_rows
            while rows >= batch_size:
                table = pa.Table.from_batches(held)
                yield table.slice(0, batch_size)
                rest = table.slice(batch_size)
                held, rows = rest.to_batches(), rest.num_rows
        if rows:
            yield pa.Table.from_batches(held)
    except (pa.ArrowException, OSError) as error:
        raise OutputReadError(f"{path} is not a readable parquet file ({error})") from error


def read_output_schema(path: Path) -> pa.Schema:
    """The columns of an output (or version), read from its footer alone."""
    _pull(path)
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise OutputReadError(f"{path} is not a readable parquet file ({error})") from error


def output_rows(path: Path) -> int:
    """Rows of an output (or version), read from its footer alone."""
    _pull(path)
    try:
        return pq.read_metadata(path).num_rows
    except (pa.ArrowException, OSError) as error:
        raise OutputReadError(f"{path} is not a readable parquet file ({error})") from error


def output_bytes(path: Path) -> int:
    """Uncompressed bytes of an output's row groups (what a dataset card reports)."""
    _pull(path)
    metadata = pq.read_metadata(path)
    return sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))


def output_sha256(path: Path) -> str:
    _pull(path)
    return sha256_file(path)


def read_json(path: Path) -> Any:
    """A JSON document of the data root (a manifest, a shard spec), or None when there is none;
    malformed JSON is an error naming the file."""
    _pull(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise OutputReadError(f"{path} is not valid JSON: {error}") from error


def read_text(path: Path) -> str | None:
    _pull(path)
    return path.read_text(errors="replace") if path.is_file() else None


def files_under(directory: Path, pattern: str) -> list[Path]:
    """Files under a directory the gateway handed out (an export, a published folder) that
    match `pattern`, pulled from the store; staging and other dot-directories are left out."""
    pull_tree(directory)
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.glob(pattern)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def directory_entries(path: Path) -> list[str] | None:
    """The names in a directory (pulled from the store first); None when nothing is there, an
    error naming it when it is a file."""
    pull_tree(path)
    if not path.exists():
        return None
    if not path.is_dir():
        raise OutputReadError(f"{path} exists and is not a directory")
    return sorted(p.name for p in path.iterdir())


def modified_at(path: Path) -> float | None:
    """When the file at `path` was last written here, in epoch seconds; None when missing."""
    _pull(path)
    return path.stat().st_mtime if path.exists() else None


# --- writes --------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(final_path: Path, *, push: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; rename it into place only on success (and
    upload it to the store, unless `push` is off for a file that stays local)."""
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final_path.name}.", suffix=".tmp", dir=final_path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        os.replace(tmp_path, final_path)
        if push:
            _push(final_path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet_atomic(table: pa.Table, final_path: Path) -> Path:
    """Write `table` to `final_path` atomically (zstd-compressed)."""
    with atomic_path(final_path) as tmp:
        write_table(table, tmp)
    return final_path


def write_json_atomic(payload: Any, final_path: Path) -> Path:
    with atomic_path(final_path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return final_path


def write_text_atomic(text: str, final_path: Path) -> Path:
    with atomic_path(final_path) as tmp:
        tmp.write_text(text)
    return final_path


@contextlib.contextmanager
def parquet_writer(final_path: Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A parquet file written a row group at a time and put in place (and uploaded) whole once
    the writer closes without error: for a file bigger than memory."""
    with (
        atomic_path(final_path) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
    ):
        yield writer


@contextlib.contextmanager
def scratch_dir(data_dir: Path) -> Iterator[Path]:
    """A private directory on this machine, beside the working copy, for what a step spills
    while it runs (an external shuffle); removed when the step ends, by `mind gc` after a
    crash. Never uploaded."""
    root = data_dir / SCRATCH_DIRNAME
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="step-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fresh_dir(directory: Path) -> Staging:
    """An empty directory of the data root to write one part of a partitioned export into;
    what a killed attempt left there is removed first. `push_dir` uploads it when done."""
    delete_dir(directory)
    directory.mkdir(parents=True)
    return Staging(directory)


def push_dir(directory: Path) -> None:
    """Upload a directory written on this machine (one part of a partitioned export) to the
    store, for the step that assembles the parts elsewhere. Nothing for a local data root."""
    store = object_store.store_for(directory)
    if store is not None:
        store.push_tree(directory)


def delete_dir(directory: Path) -> None:
    """Delete a directory of the data root, here and in the store."""
    store = object_store.store_for(directory)
    if store is not None:
        store.delete(store.list_files(directory))
    shutil.rmtree(directory, ignore_errors=True)


def delete(path: Path) -> None:
    """Delete a plain file of the data root, here and in the store."""
    path.unlink(missing_ok=True)
    store = object_store.store_for(path)
    if store is not None:
        store.delete([path])


@contextlib.contextmanager
def local_file_build(final_path: Path) -> Iterator[Path]:
    """Yield a path that does not exist yet beside `final_path`, for a writer that creates its
    own file (DuckDB); rename it into place on success. The file stays on this machine: it is
    never uploaded (a cache such as metrics.duckdb)."""
    with atomic_path(final_path, push=False) as tmp:
        tmp.unlink()
        yield tmp


def local_file_exists(path: Path) -> bool:
    """Whether a file that stays on this machine (a cache, never in the store) is there."""
    return path.is_file()


def set_aside(path: Path, label: str) -> Path:
    """Move a local file that cannot be used (a corrupt cache) aside as `<name>.<label>`,
    keeping it for inspection; returns where it went."""
    aside = path.with_name(f"{path.name}.{label}")
    os.replace(path, aside)
    return aside


def remove_dir_if_empty(path: Path) -> None:
    """Remove a directory of the working copy once nothing is left in it."""
    with contextlib.suppress(FileNotFoundError, OSError):
        path.rmdir()


class Staging:
    """A directory being built whole (see `replace_dir`): files are written here without
    uploads, and reach the data root together when the directory is swapped in."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def sub(self, relative: str) -> Staging:
        """A subdirectory being built as part of this one (an export's `megatron/`)."""
        return Staging(self.path(f"{relative}/.keep").parent)

    def path(self, relative: str) -> Path:
        """A path inside the staging directory, for writers that need one (a tokenizer's saved
        files, an indexed dataset's `.bin`); its parent exists."""
        path = self.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add_table(self, relative: str, table: pa.Table) -> Path:
        path = self.path(relative)
        write_table(table, path)
        return path

    @contextlib.contextmanager
    def table_writer(
        self, relative: str, schema: pa.Schema
    ) -> Iterator[Callable[[pa.Table], None]]:
        """A parquet file written a table at a time, for one too big to hold whole: the same
        bytes `add_table` writes for all the tables together (rows are held until a whole row
        group of ROW_GROUP_ROWS is there, so the groups fall where `write_table` puts them)."""
        held: list[pa.Table] = []
        rows = written = 0
        with pq.ParquetWriter(self.path(relative), schema, compression="zstd") as writer:

            def write(table: pa.Table) -> None:
                nonlocal held, rows, written
                held.append(table.cast(schema))
                rows += table.num_rows
                if rows >= ROW_GROUP_ROWS:
                    whole = pa.concat_tables(held)
                    cut = rows - rows % ROW_GROUP_ROWS
                    writer.write_table(whole.slice(0, cut), row_group_size=ROW_GROUP_ROWS)
                    held, rows, written = [whole.slice(cut)], rows - cut, written + cut

            yield write
            if rows or not written:  # an empty file still has its one empty row group
                rest = pa.concat_tables(held) if held else schema.empty_table()
                writer.write_table(rest, row_group_size=ROW_GROUP_ROWS)

    def add_text(self, relative: str, text: str) -> Path:
        path = self.path(relative)
        path.write_text(text)
        return path

    def add_json(self, relative: str, payload: Any) -> Path:
        return self.add_text(
            relative, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
        )

    def add_copy(self, source: Path, relative: str) -> Path:
        """Copy a file the gateway handed out (an export shard) into the staging directory."""
        _pull(source)
        path = self.path(relative)
        shutil.copyfile(source, path)
        return path

    def add_move(self, source: Path, relative: str) -> Path:
        """Move a file of the data root written for this directory (a part of a partitioned
        export) into it, pulling it from the store first when it was written elsewhere."""
        _pull(source)
        path = self.path(relative)
        os.replace(source, path)
        return path

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.rglob("*") if p.is_file())

    def size(self, relative: str) -> int:
        return (self.directory / relative).stat().st_size

    def table_bytes(self, relative: str) -> int:
        """Uncompressed bytes of a parquet file written here."""
        metadata = pq.read_metadata(self.directory / relative)
        return sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))


@contextlib.contextmanager
def replace_dir(final: Path, *, mode: int | None = None) -> Iterator[Staging]:
    """Build a directory whole and put it in place of `final` only once complete.

    The body writes into a staging directory beside `final` (`.<name>.staging.*`). On success
    the old directory is moved aside (`.<name>.old.*`), the staging directory renamed to `final`
    and the old one deleted, so `final` is at every moment the old directory or the new one;
    under an object store the finished directory is then uploaded (objects of the old one that
    the new one replaced are deleted). On failure the staging directory is removed and `final`
    is left as it was. `mode`: the new directory's permissions (mkdtemp's are private).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging.", dir=final.parent))
    if mode is not None:
        staging.chmod(mode)
    try:
        yield Staging(staging)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
            os.rename(final, old / final.name)
        try:
            os.rename(staging, final)
        except OSError:
            if old is not None:
                os.rename(old / final.name, final)  # the earlier directory stays where it was
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    store = object_store.store_for(final)
    if store is not None:
        store.push_tree(final)


# --- garbage: what `mind gc` may delete ----------------------------------------------------------
@dataclass(frozen=True)
class Leftover:
    """A file or directory of the working copy that nothing may need: an output version, a
    temporary file of a killed write, or the staging directory of a killed directory swap."""

    path: Path
    kind: str  # "version", "temp file", "token cache", or one of DIRECTORY_KINDS
    bytes: int
    age_s: float


STAGING_KINDS = ("export staging", "publish staging")
# Leftovers that are whole directories: staging of killed swaps, parts of an export whose last
# step never ran, scratch of a killed step.
DIRECTORY_KINDS = (*STAGING_KINDS, "export parts", "scratch")
STORED = "stored "  # the kind of an object in the store: "stored version", ...
REQUESTS_DIRNAME = "_requests"


def current_versions(data_dir: Path) -> set[str]:
    """Normalised paths of the version every current pointer under the data root names: the
    store's pointers under an object store (one GET each), the local links otherwise."""
    store = object_store.store_for(data_dir)
    if store is not None:
        found_in_store = set()
        for path in store.list_files(data_dir):
            if path.name == POINTER_NAME and path.parent.parent.name == VERSIONS_DIRNAME:
                name = (store.get_bytes(path) or b"").decode().strip()
                if name:
                    found_in_store.add(os.path.normpath(path.parent / name))
        return found_in_store
    found: set[str] = set()
    for directory, dirnames, filenames in os.walk(data_dir):
        dirnames[:] = [d for d in dirnames if d != VERSIONS_DIRNAME]
        for name in filenames + dirnames:
            path = Path(directory, name)
            if path.is_symlink():
                found.add(os.path.normpath(current_version(path)))
    return found


def leftovers(data_dir: Path, keep: set[str], older_than_s: float) -> list[Leftover]:
    """Everything under the data root `mind gc` may delete: versions whose normalised path is
    not in `keep`, temporary files, staging directories of killed swaps in `blend_exports/`
    and `published/`, parts of exports whose last step never ran, scratch of killed steps, and
    token caches of content no version holds any more; nothing younger than `older_than_s` (a
    write in flight has a version on disk for a moment before its pointer moves)."""
    now = time.time()
    found = []
    for path, kind in _leftover_candidates(data_dir):
        stat = path.lstat()
        age = now - stat.st_mtime
        if age < older_than_s or (kind == "version" and os.path.normpath(path) in keep):
            continue
        size = _tree_size(path) if kind in DIRECTORY_KINDS else stat.st_size
        found.append(Leftover(path, kind, size, age))
    return found


def stored_leftovers(data_dir: Path, keep: set[str], older_than_s: float) -> list[Leftover]:
    """What `mind gc` may delete from the object store behind the working copy `data_dir`:
    versions whose normalised path is not in `keep`, temporary objects of killed uploads,
    request batches of generations that never finished (a batch is deleted when its partition
    is written), token caches of content no version holds any more, and parts of exports whose
    last step never ran; nothing younger than `older_than_s`. Empty for a local data root."""
    store = object_store.store_for(data_dir)
    if store is None:
        return []
    now = time.time()
    found = []
    listing = store.listing_with_times(data_dir)
    version_names: dict[Path, list[str]] = {}
    for path in listing:
        if is_version(path):
            version_names.setdefault(path.parent, []).append(path.name)
    for path, (size, modified) in listing.items():
        age = now - modified
        if age < older_than_s:
            continue
        relative = path.relative_to(data_dir).parts
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            kind = "temp file"
        elif is_version(path) and os.path.normpath(path) not in keep:
            kind = "version"
        elif relative[0] == REQUESTS_DIRNAME:
            kind = "request batch"
        elif relative[0] == TOKEN_CACHE_DIRNAME and path.suffix == ".parquet":
            output, sha256 = _cached_output(data_dir, path)
            if any(f"-{sha256[:16]}." in n for n in version_names.get(versions_dir(output), [])):
                continue
            kind = "token cache"
        elif relative[:2] == ("blend_exports", EXPORT_PARTS_DIRNAME):
            kind = "export parts"
        else:
            continue
        found.append(Leftover(path, STORED + kind, size, age))
    return found


def _leftover_candidates(data_dir: Path) -> Iterator[tuple[Path, str]]:
    exports, published = blend_exports_root(data_dir), published_root(data_dir)
    token_caches = data_dir / TOKEN_CACHE_DIRNAME
    for directory, dirnames, filenames in os.walk(data_dir):
        here = Path(directory)
        in_versions = here.parent.name == VERSIONS_DIRNAME
        in_token_cache = token_caches in here.parents
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                yield here / name, "temp file"
            elif in_versions:
                yield here / name, "version"
            elif in_token_cache and _cached_content_gone(data_dir, here / name):
                yield here / name, "token cache"
        if here == data_dir and SCRATCH_DIRNAME in dirnames:
            dirnames.remove(SCRATCH_DIRNAME)
            for name in sorted(os.listdir(here / SCRATCH_DIRNAME)):
                yield here / SCRATCH_DIRNAME / name, "scratch"
        if here == exports and EXPORT_PARTS_DIRNAME in dirnames:
            dirnames.remove(EXPORT_PARTS_DIRNAME)
            for parts in sorted((here / EXPORT_PARTS_DIRNAME).glob("*/*")):
                yield parts, "export parts"
        kind = {exports: "export staging", published: "publish staging"}.get(here)
        if kind is not None:
            # Directory swaps stage into '.<name>.staging.*' and move the directory they
            # replace into '.<name>.old.*' until the new one is in place.
            staging = [d for d in dirnames if d.startswith(".")]
            dirnames[:] = [d for d in dirnames if d not in staging]
            for name in staging:
                yield here / name, kind


def _cached_output(data_dir: Path, cache_file: Path) -> tuple[Path, str]:
    """The output a token cache file belongs to (its versions' directory) and the content
    sha256 it was made from."""
    stem = cache_file.parent.relative_to(data_dir / TOKEN_CACHE_DIRNAME).parts[1:]
    output = data_dir.joinpath(*stem).with_suffix(".parquet")
    return output, cache_file.name.split(".", 1)[0]


def _cached_content_gone(data_dir: Path, cache_file: Path) -> bool:
    """Whether no version of its output holds the content a token cache file was made from
    (versions carry a prefix of their sha256 in their names); a plain output from before
    versions keeps its cache."""
    output, sha256 = _cached_output(data_dir, cache_file)
    if output.is_file() and not output.is_symlink():
        return False
    return not any(versions_dir(output).glob(f"*-{sha256[:16]}.*"))


def _tree_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*"))


def delete_leftovers(found: list[Leftover]) -> None:
    stored = [item.path for item in found if item.kind.startswith(STORED)]
    if stored:
        store = object_store.store_for(stored[0])
        if store is not None:
            store.delete(stored)
    for item in found:
        if item.kind.startswith(STORED):
            continue
        if item.kind in DIRECTORY_KINDS:
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)


# --- hashes --------------------------------------------------------------------------------------
def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
