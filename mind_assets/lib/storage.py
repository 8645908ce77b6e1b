"""Where asset files live under the data root, and how they are written without half-states.

Every writer goes through a temporary file in the destination directory and an atomic rename,
so a crash never leaves a partial parquet where a reader could find it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet_atomic(table: pa.Table, final_path: Path) -> Path:
    """Write `table` to `final_path` atomically (zstd-compressed)."""
    with atomic_path(final_path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return final_path


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
