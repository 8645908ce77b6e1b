"""The corpus inbox: files dropped into a directory become shards.

Each new `.jsonl` or `.parquet` file becomes a shard named after the file; a `.hf.json` file is a
manifest of Hugging Face ranges (`{"dataset": ..., "split": ..., "rows": "0:1000", "config": ...}`).
A file is checked before it is registered, so a corrupt or vanished file is reported and skipped
rather than registered and failed later. The check reads only a file's head (the parquet footer,
the first jsonl line): `raw_documents` validates every row when it reads the shard.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from mind_assets.corpus.shard_specs import make_shard_spec
from mind_assets.corpus.shards import ShardSpec

INBOX_SUFFIXES = (".jsonl", ".parquet", ".hf.json")
# Enough for any real first document; a longer first line is checked for a JSON object start
# only, so a multi-gigabyte file without newlines is never read whole to register it.
FIRST_LINE_BYTES = 1 << 20
MANIFEST_BYTES = 64 << 10
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class InboxFile:
    directory: Path
    name: str
    size: int
    mtime_ns: int

    @property
    def path(self) -> Path:
        # Built on demand: a scan of 50,000 files builds no Path objects it does not need.
        return self.directory / self.name

    @property
    def key(self) -> str:
        """This version of the file: name + size + mtime, so a rewritten file counts as new."""
        return f"{self.name}:{self.size}:{self.mtime_ns}"


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
    """Every inbox file by name; one directory read and one stat per file."""
    if not inbox.is_dir():
        return []
    files = []
    with os.scandir(inbox) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(INBOX_SUFFIXES):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except FileNotFoundError:  # vanished between listing and stat
                continue
            files.append(InboxFile(inbox, entry.name, stat.st_size, stat.st_mtime_ns))
    files.sort(key=lambda f: f.name)
    return files


def unseen_files(files: Iterable[InboxFile], seen: Mapping[str, str]) -> list[InboxFile]:
    """Files whose current version is not in `seen` (file name -> key), oldest first.

    Oldest first (mtime, then name) so a flood drains in the order it arrived and a file dropped
    later waits behind it rather than jumping the queue by its name.
    """
    new = [f for f in files if seen.get(f.name) != f.key]
    new.sort(key=lambda f: (f.mtime_ns, f.name))
    return new


def _check_jsonl_head(path: Path) -> None:
    with path.open("rb") as handle:
        first = handle.readline(FIRST_LINE_BYTES)
    if len(first) < FIRST_LINE_BYTES or first.endswith(b"\n"):
        json.loads(first.decode("utf-8"))
        return
    # A first line longer than the cap: check what was read decodes and opens a JSON object.
    head = codecs.getincrementaldecoder("utf-8")().decode(first, final=False)
    if not head.lstrip().startswith("{"):
        raise ValueError("the first line does not start a JSON object")


def inspect_file(file: InboxFile) -> InboxDecision:
    """A shard spec for the file, or the reason it cannot be used."""
    path = file.path
    name = shard_name_for(path)
    try:
        if path.name.endswith(".hf.json"):
            with path.open("rb") as handle:
                text = handle.read(MANIFEST_BYTES + 1)
            if len(text) > MANIFEST_BYTES:
                raise ValueError(f"a manifest is at most {MANIFEST_BYTES} bytes")
            manifest = json.loads(text)
            spec = make_shard_spec(
                name,
                [f"hf://{manifest['dataset']}"],
                split=manifest.get("split", "train"),
                rows=manifest.get("rows"),
                config_name=manifest.get("config"),
            )
        elif path.suffix == ".parquet":
            pq.read_metadata(path)  # the footer only: a truncated or non-parquet file fails here
            spec = make_shard_spec(name, [str(path)])
        else:
            _check_jsonl_head(path)
            spec = make_shard_spec(name, [str(path)])
    except FileNotFoundError:
        return InboxDecision(file, None, f"{path} vanished before it could be read")
    except (ValueError, KeyError, TypeError, OSError) as error:
        return InboxDecision(file, None, f"{path} is not a usable corpus file: {error}")
    return InboxDecision(file, spec, "")
