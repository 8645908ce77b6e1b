"""The data root in object storage (`MIND_DATA_DIR=s3://bucket/prefix`, `gs://...`, any fsspec
URL), kept in step with a local working copy.

The object store is the data root of record; each process (a Dagster run, a pod) works in a
local working copy (`MIND_DATA_CACHE_DIR`), because the stages, DuckDB and the engine read and
write local files. Two rules keep the two in step:

- **Push after commit.** Every write that `lib/storage` makes atomic locally is uploaded the moment
  it is committed. An object store's PUT is all or nothing (S3, GCS and Azure show an object only
  once its upload completes, multipart uploads included), so a killed write leaves no partial
  object; on a filesystem without that guarantee the upload goes to a temporary key that is
  renamed. Versions are immutable: they are uploaded with a conditional put ("create only"), so
  nothing can overwrite a version a manifest pins. The current pointer of an output (a symbolic
  link locally) is a small object `<dir>/.versions/<name>/CURRENT` holding the version's file
  name, written after the version, so a reader following it never finds a missing version.
- **Pull before read.** Reading an output first brings the store's current version into the
  working copy (one small GET for the pointer; the version only when it is not there yet), so a
  process with an empty working copy reads what other processes wrote.

The DuckDB file of the metrics and the Dagster instance stay local (the metrics' parquet
partitions are data-root files and travel like any other).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSIONS_DIRNAME = ".versions"  # where lib/storage keeps the versions of an output
POINTER_NAME = "CURRENT"
# Object stores whose PUT makes an object visible only once its upload is complete; any other
# fsspec filesystem gets a temporary key and a rename.
ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
DEFAULT_UPLOAD_CHUNK_BYTES = 50 * 2**20


class ObjectStoreError(RuntimeError):
    """The object store refused or failed an operation; the message names the URL."""


@dataclass
class DataStore:
    """The object store behind one working copy."""

    url: str
    working_copy: Path
    options: Mapping[str, Any] = field(default_factory=dict)
    upload_chunk_bytes: int = DEFAULT_UPLOAD_CHUNK_BYTES

    def __post_init__(self) -> None:
        import fsspec

        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **dict(self.options))
        except (ImportError, ValueError) as error:
            raise ObjectStoreError(
                f"MIND_DATA_DIR {self.url}: {error} (object storage needs the fsspec "
                "implementation of its scheme: `pip install -e .[s3]` for s3://)"
            ) from error
        self.root = self.root.rstrip("/")
        protocol = self.fs.protocol
        self.protocol = protocol if isinstance(protocol, str) else protocol[0]

    # --- keys ----------------------------------------------------------------------------------
    def key(self, path: Path) -> str:
        """The object key of a working-copy path."""
        relative = Path(os.path.abspath(path)).relative_to(self.working_copy)
        return f"{self.root}/{relative.as_posix()}"

    def path_of(self, key: str) -> Path:
        return self.working_copy / key[len(self.root) + 1 :]

    def url_of(self, path: Path) -> str:
        return f"{self.url.rstrip('/')}/{self.key(path)[len(self.root) + 1 :]}"

    def pointer_key(self, output: Path) -> str:
        return f"{self.key(output.parent)}/{VERSIONS_DIRNAME}/{output.name}/{POINTER_NAME}"

    # --- writes --------------------------------------------------------------------------------
    def push(self, path: Path) -> None:
        """Upload what was just committed at `path`: a version (create-only), the pointer an
        output's link names, or a plain file."""
        if path.is_symlink():
            version = Path(os.readlink(path)).name
            self._put_bytes(version.encode(), self.pointer_key(path))
        elif _is_version(path):
            self._upload(path, self.key(path), create_only=True)
        else:
            self._upload(path, self.key(path))

    def push_tree(self, directory: Path) -> None:
        """Upload every file under `directory` (a finished export), deeper files first so its
        top-level summaries land last, then delete the objects an earlier export left that this
        one replaced: top-level files it no longer has, and files inside the subfolders it
        wrote (a subfolder it did not write, say the Megatron datasets of an earlier export, is
        left alone, as it is on disk)."""
        files = sorted(
            (p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")),
            key=lambda p: (-len(p.relative_to(directory).parts), p.as_posix()),
        )
        for path in files:
            self._upload(path, self.key(path))
        wanted = {self.key(p) for p in files}
        stale = []
        for key in self._find(self.key(directory)):
            relative = self.path_of(key).relative_to(directory)
            top = directory / relative.parts[0]
            if key not in wanted and (len(relative.parts) == 1 or top.is_dir()):
                stale.append(key)
        if stale:
            self._call("delete", lambda: self.fs.rm(stale), directory)

    def _upload(self, path: Path, key: str, *, create_only: bool = False) -> None:
        if self.protocol in ATOMIC_PUT_PROTOCOLS:
            options: dict[str, Any] = {"mode": "create" if create_only else "overwrite"}
            if self.protocol in {"s3", "s3a"}:
                options["chunksize"] = self.upload_chunk_bytes
            # FileExistsError: a version's name carries its content hash, so it is already there.
            with contextlib.suppress(FileExistsError):
                self._call("upload", lambda: self.fs.put_file(str(path), key, **options), key)
            return
        # No atomic PUT here: upload beside the key, then rename.
        parent, _, name = key.rpartition("/")
        staged = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        self._call("upload", lambda: self.fs.put_file(str(path), staged), key)
        self._call("rename", lambda: self.fs.mv(staged, key), key)

    def _put_bytes(self, payload: bytes, key: str) -> None:
        with tempfile.NamedTemporaryFile(prefix=".mind-pointer.", suffix=".tmp") as handle:
            handle.write(payload)
            handle.flush()
            self._upload(Path(handle.name), key)

    # --- reads ---------------------------------------------------------------------------------
    def pull(self, path: Path) -> None:
        """Bring the store's state of `path` into the working copy: a pinned version when it is
        missing here; for an output, the version its pointer names (and the local link moved to
        it); a plain file, downloaded again. Nothing happens when the store has no such object
        (a local-only file stays as it is)."""
        if _is_version(path):
            if not path.is_file():
                self._download(self.key(path), path, missing_ok=True)
            return
        try:
            version_name = self._call(
                "read", lambda: self.fs.cat_file(self.pointer_key(path)), path
            ).decode()
        except FileNotFoundError:
            self._download(self.key(path), path, missing_ok=True)
            return
        from mind_assets.lib.storage import point_at, versions_dir  # lib/storage imports this

        version = versions_dir(path) / version_name.strip()
        if not version.is_file():
            self._download(self.key(version), version, missing_ok=False)
        if not path.is_symlink() or Path(os.readlink(path)).name != version.name:
            point_at(path, version, push=False)

    def outputs(self, directory: Path) -> list[Path]:
        """The working-copy paths of every output and plain file the store holds under
        `directory` (an output's pointer stands for the output; versions and temporary objects
        are left out)."""
        found = set()
        for key in self._find(self.key(directory)):
            path = self.path_of(key)
            if path.name == POINTER_NAME and path.parent.parent.name == VERSIONS_DIRNAME:
                found.add(path.parent.parent.parent / path.parent.name)
            elif not any(part.startswith(".") for part in path.relative_to(directory).parts):
                found.add(path)
        return sorted(found)

    def _find(self, prefix: str) -> list[str]:
        self.fs.invalidate_cache()
        try:
            return self._call("list", lambda: self.fs.find(prefix), prefix)
        except FileNotFoundError:
            return []

    def _download(self, key: str, path: Path, *, missing_ok: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            self._call("download", lambda: self.fs.get_file(key, staged), key)
            os.replace(staged, path)
        except FileNotFoundError:
            if not missing_ok:
                raise ObjectStoreError(
                    f"{self.url}: {key} is named by its output's pointer but missing"
                ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)

    def _call(self, what: str, action, where: object = None):
        """Run one store operation; failures other than a missing object name the URL."""
        try:
            return action()
        except FileNotFoundError as error:
            if what in {"read", "list", "download"}:
                raise  # a missing object: the callers decide
            raise ObjectStoreError(
                f"{self.url}: {what} {where or ''} failed: {error} (does the bucket exist?)"
            ) from error
        except FileExistsError:
            raise
        except OSError as error:
            raise ObjectStoreError(f"{self.url}: {what} {where or ''} failed: {error}") from error


def _is_version(path: Path) -> bool:
    return path.parent.parent.name == VERSIONS_DIRNAME and path.name != POINTER_NAME


# Working copy -> its store. lib/storage sees only paths: it finds the store of a path under a
# working copy here. The settings of the environment register theirs (read again only when a
# MIND_DATA_* variable changes); code that builds its own settings calls `register`.
_STORES: dict[Path, DataStore] = {}
_STORE_VARIABLES = (
    "MIND_DATA_DIR",
    "MIND_DATA_STORE_URL",
    "MIND_DATA_CACHE_DIR",
    "MIND_DATA_STORE_OPTIONS",
)
_environment_seen: list[tuple[str | None, ...]] = []


def register(working_copy: Path, url: str, options: Mapping[str, Any]) -> DataStore:
    known = _STORES.get(working_copy)
    if known is not None and known.url == url and dict(known.options) == dict(options):
        return known
    _STORES[working_copy] = DataStore(url, working_copy, dict(options))
    return _STORES[working_copy]


def _register_from_environment() -> None:
    seen = tuple(os.environ.get(name) for name in _STORE_VARIABLES)
    if _environment_seen and _environment_seen[0] == seen:
        return
    _environment_seen[:] = [seen]
    data_dir, store_url = seen[0] or "", seen[1]
    if "://" not in data_dir and not store_url:
        return  # a local data root
    from mind_assets.settings import get_settings

    settings = get_settings()
    if settings.data_store_url:
        register(settings.data_dir, settings.data_store_url, settings.data_store_options)


def store_for(path: Path) -> DataStore | None:
    _register_from_environment()
    if not _STORES:
        return None
    absolute = Path(os.path.abspath(path))
    for root, store in _STORES.items():
        if absolute.is_relative_to(root):
            return store
    return None


def push(path: Path) -> None:
    """Upload `path` when it lies under a working copy; nothing otherwise."""
    store = store_for(path)
    if store is not None:
        store.push(path)


def push_tree(directory: Path) -> None:
    store = store_for(directory)
    if store is not None:
        store.push_tree(directory)


def pull(path: Path) -> None:
    """Refresh `path` from its store when it lies under a working copy; nothing otherwise."""
    store = store_for(path)
    if store is not None:
        store.pull(path)


def stored_outputs(directory: Path) -> list[Path] | None:
    """What the store holds under `directory`; None without a store (read the disk instead)."""
    store = store_for(directory)
    return None if store is None else store.outputs(directory)
