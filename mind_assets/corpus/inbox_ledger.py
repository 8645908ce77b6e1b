"""What the corpus inbox has registered, kept in the Dagster instance's key-value store.

One entry per inbox file name holds the version (name:size:mtime) last registered, so the sensor
cursor stays a few dozen bytes however many files have passed through, and one tick handles at
most a given number of new files, leaving the rest to the next.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from dagster import DagsterInstance

from mind_assets.corpus.inbox import (
    InboxDecision,
    InboxFile,
    inspect_file,
    scan_inbox,
    unseen_files,
)
from mind_assets.corpus.shards import ShardSpec, register_shards
from mind_assets.lib.mappings import parse_mapping
from mind_assets.settings import MindSettings

SEEN_PREFIX = "mind_assets/inbox/seen/"
STAGED_KEY = "mind_assets/inbox/staged"
CURSOR_VERSION = 2
_READ_CHUNK = 900  # keys per query: under SQLite's oldest limit of 999 parameters
_WRITE_CHUNK = 400  # rows per insert, two parameters each

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class InboxCursor:
    """The sensor's cursor: the batch the last tick staged, and how many new files were still
    waiting then (for the UI; the ledger, not this count, decides what is new)."""

    batch: str | None = None
    remaining: int = 0
    legacy_seen: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> InboxCursor:
        """Read a cursor. The old format (every file name -> key) is kept as `legacy_seen` so
        those files are moved into the ledger instead of being registered again."""
        if not text:
            return cls()
        data = parse_mapping(
            text, "JSON", "the corpus inbox cursor", expected=f"a JSON object, not {text[:80]!r}"
        )
        if data.get("version") == CURSOR_VERSION:
            batch, remaining = data.get("batch"), data.get("remaining")
            return cls(
                batch=batch if isinstance(batch, str) else None,
                remaining=remaining if isinstance(remaining, int) else 0,
            )
        return cls(legacy_seen={k: v for k, v in data.items() if isinstance(v, str)})

    def dump(self) -> str:
        payload: dict[str, object] = {"version": CURSOR_VERSION, "remaining": self.remaining}
        if self.batch:
            payload["batch"] = self.batch
        return json.dumps(payload, sort_keys=True)


class CursorStore(Protocol):
    """A key-value store of the instance: its run storage's cursor values (not marked public
    by Dagster; mind_assets_tests/test_dagster_contract.py pins what is used here)."""

    def get_cursor_values(self, keys: set[str]) -> Mapping[str, str]: ...

    def set_cursor_values(self, pairs: Mapping[str, str]) -> None: ...


def _set_values(storage: CursorStore, pairs: Mapping[str, str]) -> None:
    """Upsert key-value pairs. New and existing keys are written apart because SQLite's
    `set_cursor_values` inserts the whole batch and, if any key exists, only updates the existing
    ones: the new keys of a mixed batch would be lost."""
    items = list(pairs.items())
    for chunk in _chunks(items, _WRITE_CHUNK):
        values = dict(chunk)
        existing = storage.get_cursor_values(set(values))
        new = {k: v for k, v in values.items() if k not in existing}
        changed = {k: v for k, v in values.items() if k in existing and existing[k] != v}
        if new:
            storage.set_cursor_values(new)
        if changed:
            storage.set_cursor_values(changed)


class InboxLedger:
    """Per-file "already seen" versions in the instance's key-value store (SQLite or Postgres
    run storage), so they survive restarts and never depend on the cursor.

    A tick's files are first *staged* under one key with a fresh batch id that goes into the
    cursor; they become *seen* when a later tick is handed that cursor, i.e. once Dagster has
    accepted the tick that requested their runs. A tick that fails or times out leaves its files
    unseen, so the next tick requests them again under the same run keys and Dagster drops the
    duplicates.
    """

    def __init__(self, instance: DagsterInstance) -> None:
        self._storage: CursorStore = instance.run_storage

    def seen(self, names: Iterable[str]) -> dict[str, str]:
        """File name -> the version last registered, for the names that have one."""
        found: dict[str, str] = {}
        for chunk in _chunks(list(names), _READ_CHUNK):
            values = self._storage.get_cursor_values({SEEN_PREFIX + name for name in chunk})
            found.update({key[len(SEEN_PREFIX) :]: value for key, value in values.items()})
        return found

    def mark_seen(self, versions: Mapping[str, str]) -> None:
        _set_values(self._storage, {SEEN_PREFIX + name: key for name, key in versions.items()})

    def stage(self, versions: Mapping[str, str]) -> str:
        batch = uuid.uuid4().hex
        _set_values(self._storage, {STAGED_KEY: json.dumps({"batch": batch, "files": versions})})
        return batch

    def commit(self, batch: str | None) -> int:
        """Mark the staged files seen if `batch` is the staged batch; returns how many."""
        if not batch:
            return 0
        raw = self._storage.get_cursor_values({STAGED_KEY}).get(STAGED_KEY)
        staged = json.loads(raw) if raw else {}
        if staged.get("batch") != batch:
            return 0  # committed already, or replaced by a tick that was not accepted
        self.mark_seen(staged["files"])
        # Cleared so an idle sensor does not rewrite the same entries on every tick.
        _set_values(self._storage, {STAGED_KEY: "{}"})
        return len(staged["files"])


@dataclass(frozen=True)
class InboxTick:
    """One evaluation's outcome: the files registered as shards, those skipped, and the cursor."""

    registered: list[tuple[InboxFile, ShardSpec]]
    skipped: list[InboxDecision]
    added_partitions: list[str]
    remaining: int
    cursor: str
    notes: list[str]
    warnings: list[str]


def inbox_tick(
    instance: DagsterInstance, settings: MindSettings, cursor: str | None, limit: int
) -> InboxTick:
    """Register at most `limit` new inbox files (oldest first) and stage them in the ledger.

    Work per tick is bounded by `limit`: reading the directory and looking up seen versions are
    the only steps proportional to the inbox's size, and both are cheap per file.
    """
    if limit < 1:
        raise ValueError(f"the per-tick file limit must be at least 1, got {limit}")
    ledger = InboxLedger(instance)
    notes: list[str] = []
    warnings: list[str] = []
    try:
        state = InboxCursor.parse(cursor)
    except ValueError as error:
        # Starting over costs at most one batch requested again (deduplicated by run key).
        warnings.append(f"{error}; starting from the ledger alone")
        state = InboxCursor()
    if state.legacy_seen:
        ledger.mark_seen(state.legacy_seen)
        notes.append(f"moved {len(state.legacy_seen)} files from the old cursor into the ledger")
    if committed := ledger.commit(state.batch):
        notes.append(f"{committed} files of the last tick marked registered")

    files = scan_inbox(settings.inbox)
    new = unseen_files(files, ledger.seen(f.name for f in files))
    batch, remaining = new[:limit], max(len(new) - limit, 0)
    decisions = [inspect_file(file) for file in batch]
    registered = [(d.file, d.spec) for d in decisions if d.spec is not None]
    added = register_shards(instance, settings, [spec for _, spec in registered])
    # Skipped files are staged too: a corrupt file is reported once, and a fixed (rewritten) one
    # has a new version and is tried again.
    batch_id = ledger.stage({f.name: f.key for f in batch}) if batch else None
    return InboxTick(
        registered=registered,
        skipped=[d for d in decisions if d.spec is None],
        added_partitions=added,
        remaining=remaining,
        cursor=InboxCursor(batch=batch_id, remaining=remaining).dump(),
        notes=notes,
        warnings=warnings,
    )
