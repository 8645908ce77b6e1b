"""The transport between a local working copy and the object store behind it
(`MIND_DATA_DIR=s3://bucket/prefix`, `gs://...`, any fsspec URL).

This module moves bytes and knows nothing of what they mean: a working-copy path maps to an
object key, and files go up (`upload`, `put_bytes`, `push_tree`), come down (`download`,
`get_bytes`), are listed and deleted. Which files are versions, where an output's current
pointer lives and when to pull or push is the data-root gateway's business (`lib/storage.py`),
which sits above this module and is its only user.

Uploads are all or nothing: S3, GCS and Azure show an object only once its upload completes
(multipart included), so a killed write leaves no partial object; on a filesystem without that
guarantee an upload goes to a temporary key that is renamed. A create-only upload is a
conditional put (S3 `If-None-Match: *`): it never replaces an object, and an object already
there under that key is accepted only when it has the same size (same name, same content: the
gateway names versions after their content hash); anything else fails loudly.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# Object stores whose PUT makes an object visible only once its upload is complete; any other
# fsspec filesystem gets a temporary key and a rename.
ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
DEFAULT_UPLOAD_CHUNK_BYTES = 50 * 2**20

T = TypeVar("T")


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
        return self.root if relative == Path() else f"{self.root}/{relative.as_posix()}"

    def path_of(self, key: str) -> Path:
        return self.working_copy / key[len(self.root) + 1 :]

    def url_of(self, path: Path) -> str:
        return f"{self.url.rstrip('/')}/{self.key(path)[len(self.root) + 1 :]}"

    # --- writes --------------------------------------------------------------------------------
    def upload(self, path: Path, *, create_only: bool = False) -> None:
        """Upload the local file `path` to its key, replacing what is there unless
        `create_only`."""
        key = self.key(path)
        if self.protocol in ATOMIC_PUT_PROTOCOLS:
            options: dict[str, Any] = {"mode": "create" if create_only else "overwrite"}
            if self.protocol in {"s3", "s3a"}:
                options["chunksize"] = self.upload_chunk_bytes
            try:
                self._call("upload", lambda: self.fs.put_file(str(path), key, **options), key)
            except FileExistsError:
                self._accept_existing(path, key)
            return
        if create_only and self._exists(key):
            self._accept_existing(path, key)
            return
        # No atomic PUT here: upload beside the key, then rename.
        parent, _, name = key.rpartition("/")
        staged = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        self._call("upload", lambda: self.fs.put_file(str(path), staged), key)
        self._call("rename", lambda: self.fs.mv(staged, key), key)

    def _accept_existing(self, path: Path, key: str) -> None:
        """A create-only upload found an object under its key: the same file uploaded before
        (same name, same size) is fine; a different one must never be replaced."""
        size = self._call("read", lambda: self.fs.info(key), key).get("size")
        if size != path.stat().st_size:
            raise ObjectStoreError(
                f"{self.url}: refused to overwrite {key}: an object of {size} bytes is already "
                f"there and {path} has {path.stat().st_size} (a version is never replaced)"
            )

    def put_bytes(self, payload: bytes, path: Path) -> None:
        """Write `payload` as the object of `path` (a small object such as a pointer)."""
        with tempfile.NamedTemporaryFile(prefix=".mind-put.", suffix=".tmp") as handle:
            handle.write(payload)
            handle.flush()
            key = self.key(path)
            if self.protocol in ATOMIC_PUT_PROTOCOLS:
                self._call("upload", lambda: self.fs.put_file(handle.name, key), key)
            else:
                parent, _, name = key.rpartition("/")
                staged = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
                self._call("upload", lambda: self.fs.put_file(handle.name, staged), key)
                self._call("rename", lambda: self.fs.mv(staged, key), key)

    def advance_pointer(self, path: Path, name: str, *, attempts: int = 20) -> str:
        """Make the small object of `path` (an output's pointer) name `name`, only forward: names
        start with the UTC time they were written, so one that sorts at or after `name` is
        newer and stays. On S3 the write is conditional on the object being unchanged since it
        was read (`If-Match` its ETag, `If-None-Match: *` when absent); a writer that lost the
        race reads again and decides again. Returns the name the pointer holds afterwards."""
        key = self.key(path)
        for _ in range(attempts):
            current, etag = self._read_with_etag(key)
            if current is not None and current >= name:
                return current
            if self._put_if_unchanged(key, name.encode(), etag):
                return name
        raise ObjectStoreError(
            f"{self.url}: the pointer {key} kept changing under {attempts} attempts to move it "
            f"to {name}; another writer of this partition is racing this one"
        )

    def _read_with_etag(self, key: str) -> tuple[str | None, str | None]:
        """The object's text and ETag (None, None when absent). The ETag is read first: if the
        object changes in between, the text is the newer one and the conditional write that
        follows fails on the older ETag, so the writer reads again."""
        self.fs.invalidate_cache(key)
        try:
            etag = self._call("read", lambda: self.fs.info(key), key).get("ETag")
            payload = self._call("read", lambda: self.fs.cat_file(key), key)
        except FileNotFoundError:
            return None, None
        return payload.decode().strip(), etag

    def _put_if_unchanged(self, key: str, payload: bytes, etag: str | None) -> bool:
        """Write `payload` unless the object changed since it was read (S3); False when another
        writer got there first. Other stores have no such condition: the write is plain, and
        only the forward-only check before it protects the pointer."""
        if self.protocol not in {"s3", "s3a"}:
            self.put_bytes(payload, self.path_of(key))
            return True
        bucket, path, _ = self.fs.split_path(key)
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=path, Body=payload, **condition)
        except FileExistsError:
            return False  # created by another writer since it was read
        except OSError as error:
            if _precondition_failed(error):
                return False  # changed by another writer since it was read
            raise ObjectStoreError(f"{self.url}: upload {key} failed: {error}") from error
        self.fs.invalidate_cache(key)
        return True

    def push_tree(self, directory: Path) -> None:
        """Upload every file under `directory` (a finished export), deeper files first so its
        top-level summaries land last, then delete the objects an earlier copy left that this
        one replaced: top-level files it no longer has, and files inside the subfolders it
        wrote (a subfolder it did not write, say the Megatron datasets of an earlier export, is
        left alone, as it is on disk)."""
        files = sorted(
            (p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")),
            key=lambda p: (-len(p.relative_to(directory).parts), p.as_posix()),
        )
        for path in files:
            self.upload(path)
        wanted = {self.key(p) for p in files}
        stale = []
        for key in self._find(self.key(directory)):
            relative = self.path_of(key).relative_to(directory)
            top = directory / relative.parts[0]
            if key not in wanted and (len(relative.parts) == 1 or top.is_dir()):
                stale.append(key)
        if stale:
            self._call("delete", lambda: self.fs.rm(stale), directory)

    def delete(self, paths: Iterable[Path]) -> None:
        keys = [self.key(p) for p in paths]
        if keys:
            with contextlib.suppress(FileNotFoundError):
                self._call("delete", lambda: self.fs.rm(keys), keys[0])

    # --- reads ---------------------------------------------------------------------------------
    def get_bytes(self, path: Path) -> bytes | None:
        """The object of `path`, or None when there is none."""
        key = self.key(path)
        try:
            return self._call("read", lambda: self.fs.cat_file(key), key)
        except FileNotFoundError:
            return None

    def download(self, path: Path, *, missing_ok: bool = True) -> bool:
        """Bring the object of `path` into the working copy (through a temporary file renamed
        into place); False when the store has no such object and `missing_ok`."""
        key = self.key(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            self._call("download", lambda: self.fs.get_file(key, staged), key)
            os.replace(staged, path)
            return True
        except FileNotFoundError:
            if not missing_ok:
                raise ObjectStoreError(f"{self.url}: {key} is missing") from None
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)

    def list_files(self, directory: Path) -> list[Path]:
        """The working-copy paths of every object under `directory`, sorted."""
        return sorted(self.listing(directory))

    def listing(self, directory: Path) -> dict[Path, int]:
        """Working-copy path -> size in bytes of every object under `directory`."""
        return {path: size for path, (size, _) in self.listing_with_times(directory).items()}

    def listing_with_times(self, directory: Path) -> dict[Path, tuple[int, float]]:
        """Working-copy path -> (size in bytes, last modified in epoch seconds) of every object
        under `directory`."""
        self.fs.invalidate_cache()
        prefix = self.key(directory)
        try:
            found = self._call("list", lambda: self.fs.find(prefix, detail=True), prefix)
        except FileNotFoundError:
            return {}
        return {
            self.path_of(key): (int(info.get("size") or 0), _modified(info))
            for key, info in found.items()
        }

    def _exists(self, key: str) -> bool:
        return bool(self._call("read", lambda: self.fs.exists(key), key))

    def _find(self, prefix: str) -> list[str]:
        self.fs.invalidate_cache()
        try:
            return self._call("list", lambda: self.fs.find(prefix), prefix)
        except FileNotFoundError:
            return []

    def _call(self, what: str, action: Callable[[], T], where: object = None) -> T:
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


def _modified(info: Mapping[str, Any]) -> float:
    """An object's last-modified time from an fsspec listing (S3: LastModified; others: mtime or
    created), in epoch seconds; 0 when the store says nothing."""
    for name in ("LastModified", "mtime", "created", "last_modified"):
        value = info.get(name)
        if value is None:
            continue
        return value.timestamp() if hasattr(value, "timestamp") else float(value)
    return 0.0


def _precondition_failed(error: BaseException) -> bool:
    """Whether an S3 error is a conditional write that lost (HTTP 412 PreconditionFailed)."""
    cause = error.__cause__ or error.__context__
    response = getattr(cause, "response", None) or {}
    return response.get("Error", {}).get("Code") == "PreconditionFailed" or (
        response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412
    )


# Working copy -> its store. The gateway sees only paths: it finds the store of a path under a
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
    """The store whose working copy holds `path`; None for a path of a local data root."""
    _register_from_environment()
    if not _STORES:
        return None
    absolute = Path(os.path.abspath(path))
    for root, store in _STORES.items():
        if absolute.is_relative_to(root):
            return store
    return None
