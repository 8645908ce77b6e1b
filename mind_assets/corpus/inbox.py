"""The corpus inbox: files dropped into a directory become shards.

Each new `.jsonl` or `.parquet` file becomes a shard named after the file; a `.hf.json` file is a
manifest of Hugging Face ranges (`{"dataset": ..., "split": ..., "rows": "0:1000", "config": ...}`).
A file is checked before it is registered, so a corrupt or vanished file is reported and skipped
rather than registered and failed later.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from mind_assets.corpus.shards import ShardSpec, make_shard_spec

INBOX_SUFFIXES = (".jsonl", ".parquet", ".hf.json")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class InboxFile:
    path: Path
    key: str  # name + size + mtime: a rewritten file counts as new


@dataclass(frozen=True)
class InboxDecision:
    file: InboxFile
    spec: ShardSpec | None
    problem: str  # why the file was skipped; empty when registered


def shard_name_for(path: Path) -> str:
    stem = path.name
    for suffix in INBOX_SUFFIXES:
        stem = stem.removesuffix(suffix)
    name = _UNSAFE.sub("-", stem).strip("-.") or "shard"
    return name[:128] if name[0].isalnum() else f"s{name}"[:128]


def scan_inbox(inbox: Path) -> list[InboxFile]:
    if not inbox.is_dir():
        return []
    files = []
    for path in sorted(inbox.iterdir()):
        if path.is_file() and path.name.endswith(INBOX_SUFFIXES) and not path.name.startswith("."):
            try:
                stat = path.stat()
            except FileNotFoundError:  # vanished between listing and stat
                continue
            files.append(InboxFile(path, f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"))
    return files


def inspect_file(file: InboxFile) -> InboxDecision:
    """A shard spec for the file, or the reason it cannot be used."""
    path = file.path
    name = shard_name_for(path)
    try:
        if path.name.endswith(".hf.json"):
            manifest = json.loads(path.read_text())
            spec = make_shard_spec(
                name,
                [f"hf://{manifest['dataset']}"],
                split=manifest.get("split", "train"),
                rows=manifest.get("rows"),
                config_name=manifest.get("config"),
            )
        elif path.suffix == ".parquet":
            pq.read_metadata(path)  # a truncated or non-parquet file fails here
            spec = make_shard_spec(name, [str(path)])
        else:
            with path.open("rb") as handle:
                first = handle.readline()
            json.loads(first.decode("utf-8"))
            spec = make_shard_spec(name, [str(path)])
    except FileNotFoundError:
        return InboxDecision(file, None, f"{path} vanished before it could be read")
    except (ValueError, KeyError, OSError) as error:
        return InboxDecision(file, None, f"{path} is not a usable corpus file: {error}")
    return InboxDecision(file, spec, "")
