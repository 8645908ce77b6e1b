"""The one decontamination rule, as every stage that makes or filters blendable rows applies it.

A stage loads the current index (`current_index`, from `benchmark_index`'s output), scans its
rows' text (and, for rows written from a source, the source's text), and hands the result to the
quarantine: a contaminated row is quarantined by the rule `contaminated`, its `rejected_by` entry
naming the benchmark, the item and the matched span, and its `contamination` column holding the
same as data. The written partition carries a `CheckRecord`; its per-benchmark counts go to the
metrics store (`decontamination`) and the asset's metadata.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from mind_assets.decontamination.index import Match, NgramIndex
from mind_assets.decontamination.record import CheckRecord, IndexVersion, with_record

RULE = "contaminated"
REJECTED_BY = "rejected_by"
CONTAMINATION_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("benchmark", pa.string()),
            pa.field("item_id", pa.string()),
            pa.field("span", pa.string()),
            pa.field("shared_ngrams", pa.int32()),
            pa.field("ngram", pa.int32()),
            pa.field("where", pa.string()),
        ]
    )
)
# Appended to every quarantine a blendable family keeps: the benchmark items a row matched.
CONTAMINATION_FIELD = pa.field("contamination", CONTAMINATION_TYPE)

# Asks the paraphrase judge about near misses: (row text, the item's text, the near miss) per
# case -> True (the row holds the item, reworded), False, or None (no clear answer).
Judge = Callable[[list[tuple[str, str, Match]]], list[bool | None]]


def with_contamination(schema: pa.Schema) -> pa.Schema:
    """A quarantine schema with the `contamination` column."""
    return schema.append(CONTAMINATION_FIELD)


def contamination_value(matches: Sequence[Match]) -> list[dict[str, Any]] | None:
    if not matches:
        return None
    return [
        {
            "benchmark": m.benchmark,
            "item_id": m.item_id,
            "span": m.span,
            "shared_ngrams": m.shared_ngrams,
            "ngram": m.ngram,
            "where": m.where,
        }
        for m in matches
    ]


@dataclass
class Decontamination:
    """The current benchmark index as a step applies it (`index` None: decontamination is off,
    every row passes and records that it was checked against nothing)."""

    version: IndexVersion
    index: NgramIndex | None
    min_shared: int = 1
    item_texts: dict[tuple[str, str], str] = field(default_factory=dict)
    judge: Judge | None = None
    judged: int = 0
    judge_limit: int = 256

    @property
    def on(self) -> bool:
        return self.index is not None

    def scan(
        self,
        texts: Sequence[str | None],
        sources: Sequence[str | None] | None = None,
        *,
        source_label: str = "source",
    ) -> list[list[Match]]:
        """Per row, the benchmark items it holds (best first): found in its text, else in its
        `sources` (the text it was written from, e.g. a conversation's chunk). With a judge,
        near misses of the text are asked about, the closest first, up to `judge_limit`."""
        if self.index is None:
            return [[] for _ in texts]
        scans = self.index.scan(list(texts), min_shared=self.min_shared)
        found = [list(s.matches) for s in scans]
        if sources is not None:
            for row, scan in enumerate(self.index.scan(list(sources), min_shared=self.min_shared)):
                if not found[row] and scan.matches:
                    found[row] = [_at(m, source_label) for m in scan.matches]
        if self.judge is not None:
            self._ask_judge(texts, scans, found)
        return found

    def _ask_judge(self, texts, scans, found: list[list[Match]]) -> None:
        near = [
            (row, scan.near_miss)
            for row, scan in enumerate(scans)
            if scan.near_miss is not None and not found[row]
        ]
        near.sort(key=lambda pair: -pair[1].shared_ngrams)
        asked = near[: self.judge_limit]
        if not asked:
            return
        cases = [
            (texts[row] or "", self.item_texts.get((m.benchmark, m.item_id), m.span), m)
            for row, m in asked
        ]
        verdicts = self.judge(cases)
        self.judged += len(asked)
        for (row, miss), verdict in zip(asked, verdicts, strict=True):
            if verdict:
                found[row] = [_at(miss, "paraphrase, judged")]

    def record(self, matches: Sequence[Sequence[Match]]) -> CheckRecord:
        """The evidence for a partition whose rows (accepted and quarantined) were `matches`."""
        return CheckRecord(
            index_version=self.version.version,
            benchmarks=dict(self.version.benchmarks),
            checked=len(matches),
            removed=dict(removed_per_benchmark(matches)),
            judged=self.judged,
        )


def _at(match: Match, where: str) -> Match:
    return dataclasses.replace(match, where=where)


def removed_per_benchmark(matches: Sequence[Sequence[Match]]) -> Counter[str]:
    """Rows per benchmark (a row that holds items of two benchmarks counts for both)."""
    return Counter(b for row in matches for b in {m.benchmark for m in row})


def quarantine_contaminated(
    accepted: pa.Table,
    quarantine: pa.Table,
    accepted_matches: Sequence[Sequence[Match]],
    quarantine_matches: Sequence[Sequence[Match]],
    quarantine_schema: pa.Schema,
    fill: Mapping[str, Any] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Move the contaminated accepted rows into the quarantine (their columns kept, `fill` for
    quarantine columns they lack), and add the rule's reason and the matches to quarantined rows
    that are contaminated too. Returns (accepted, quarantine)."""
    moved = [i for i, m in enumerate(accepted_matches) if m]
    kept = [i for i, m in enumerate(accepted_matches) if not m]
    quarantine = _with_matches(quarantine, quarantine_matches)
    if not moved:
        return accepted, quarantine
    rows = accepted.take(pa.array(moved, pa.int64()))
    columns = {}
    for column in quarantine_schema:
        if column.name == REJECTED_BY:
            values: Any = [[m.reason() for m in accepted_matches[i]] for i in moved]
        elif column.name == CONTAMINATION_FIELD.name:
            values = [contamination_value(accepted_matches[i]) for i in moved]
        elif column.name in rows.column_names:
            columns[column.name] = rows.column(column.name).cast(column.type)
            continue
        else:
            values = [(fill or {}).get(column.name)] * len(moved)
        columns[column.name] = pa.array(values, column.type)
    added = pa.table(columns, schema=quarantine_schema)
    existing = quarantine.select(quarantine_schema.names).cast(quarantine_schema)
    return (
        accepted.take(pa.array(kept, pa.int64())),
        pa.concat_tables([existing, added]),
    )


@dataclass
class CheckedSplit:
    """A partition's rows after the rule: accepted (carrying the record), quarantine, record."""

    accepted: pa.Table
    quarantine: pa.Table
    record: CheckRecord


def decontaminate_split(
    decontamination: Decontamination,
    accepted: pa.Table,
    quarantine: pa.Table,
    quarantine_schema: pa.Schema,
    *,
    text_column: str = "text",
    fill: Mapping[str, Any] | None = None,
) -> CheckedSplit:
    """Apply the rule to a partition's accepted and quarantined rows (`text_column` of each):
    contaminated accepted rows move to the quarantine, contaminated quarantined rows gain the
    reason; the accepted rows carry the check's record."""
    found = decontamination.scan(accepted.column(text_column).to_pylist())
    held = (
        decontamination.scan(quarantine.column(text_column).to_pylist())
        if quarantine.num_rows
        else []
    )
    accepted, quarantine = quarantine_contaminated(
        accepted, quarantine, found, held, quarantine_schema, fill
    )
    record = decontamination.record([*found, *held])
    return CheckedSplit(with_record(accepted, record), quarantine, record)


def _with_matches(quarantine: pa.Table, matches: Sequence[Sequence[Match]]) -> pa.Table:
    """Quarantined rows with the rule's reasons and matches added where they are contaminated
    (the `contamination` column added when the table lacks it)."""
    if CONTAMINATION_FIELD.name not in quarantine.column_names:
        quarantine = quarantine.append_column(
            CONTAMINATION_FIELD, pa.nulls(quarantine.num_rows, CONTAMINATION_TYPE)
        )
    if not any(matches):
        return quarantine
    reasons = quarantine.column(REJECTED_BY).to_pylist()
    previous = quarantine.column(CONTAMINATION_FIELD.name).to_pylist()
    for i, found in enumerate(matches):
        if found and not previous[i]:  # rows the rule already flagged keep what it found
            reasons[i] = [*(reasons[i] or []), *(m.reason() for m in found)]
            previous[i] = contamination_value(found)
    index = quarantine.schema.get_field_index(REJECTED_BY)
    column = quarantine.schema.field(index)
    quarantine = quarantine.set_column(index, column, pa.array(reasons, column.type))
    index = quarantine.schema.get_field_index(CONTAMINATION_FIELD.name)
    return quarantine.set_column(index, CONTAMINATION_FIELD, pa.array(previous, CONTAMINATION_TYPE))


def metric_rows(asset: str, partition: str, record: CheckRecord) -> pa.Table:
    """The partition's rows of the `decontamination` metrics table: one per benchmark."""
    names = sorted(record.benchmarks) or ["(none)"]
    now = datetime.now(UTC)
    return pa.table(
        {
            "asset": [asset] * len(names),
            "partition": [partition] * len(names),
            "benchmark": names,
            "index_version": [record.index_version] * len(names),
            "checked": [record.checked] * len(names),
            "removed": [record.removed.get(n, 0) for n in names],
            "recorded_at": pa.array([now] * len(names), pa.timestamp("us", tz="UTC")),
        }
    )


def record_metadata(record: CheckRecord) -> dict[str, Any]:
    """Asset metadata of a checked partition: the index, and the rows each benchmark removed
    (numbers the UI plots over materializations)."""
    return {
        "decontamination/index_version": record.index_version,
        "decontamination/checked": record.checked,
        "decontamination/removed": sum(record.removed.values()),
        **{
            f"decontamination/removed/{name}": record.removed.get(name, 0)
            for name in record.benchmarks
        },
        **({"decontamination/judged": record.judged} if record.judged else {}),
    }
