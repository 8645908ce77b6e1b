"""The MIND paper's strongest variant: for each chunk, the longest conversation across styles."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from mind_assets.decontamination.check import Decontamination, quarantine_contaminated
from mind_assets.decontamination.record import CheckRecord
from mind_assets.filtering.schema import LONGEST_QUARANTINE_SCHEMA


@dataclass
class CheckedCandidates:
    accepted: pa.Table
    quarantine: pa.Table
    record: CheckRecord


def check_longest(
    tables: list[pa.Table], chunk_texts: dict[str, str], decontamination: Decontamination
) -> CheckedCandidates:
    """The filtered rows the longest conversation is chosen from, checked against the current
    benchmark index (each and the chunk it was written from): a partition filtered against an
    older index may hold rows the current one flags; those go to the quarantine."""
    if not tables:
        raise ValueError("no conversations to choose from")
    combined = pa.concat_tables(
        [t.replace_schema_metadata(None) for t in tables], promote_options="default"
    )
    sources = [chunk_texts.get(c) for c in combined.column("chunk_id").to_pylist()]
    matches = decontamination.scan(
        combined.column("text").to_pylist(), sources, source_label="source chunk"
    )
    empty = LONGEST_QUARANTINE_SCHEMA.empty_table()
    accepted, quarantine = quarantine_contaminated(
        combined, empty, matches, [], LONGEST_QUARANTINE_SCHEMA
    )
    return CheckedCandidates(accepted, quarantine, decontamination.record(matches))


def longest_per_chunk(tables: list[pa.Table], styles: Collection[str] | None = None) -> pa.Table:
    """One row per chunk_id: the conversation with the most completion tokens (ties: more turns,
    then the style name, so the choice is deterministic). With `styles`, rows of other styles
    are no candidates (a rephrase is not a conversation, however long)."""
    if not tables:
        raise ValueError("no conversations to choose from")
    # Partitions filtered before a column existed read it as null.
    combined = pa.concat_tables(tables, promote_options="default")
    if styles is not None:
        combined = combined.filter(pc.is_in(combined.column("style"), pa.array(list(styles))))
    if combined.num_rows == 0:
        return combined
    order = pc.sort_indices(
        combined,
        sort_keys=[
            ("chunk_id", "ascending"),
            ("completion_tokens", "descending"),
            ("n_turns", "descending"),
            ("style", "ascending"),
        ],
    )
    ordered = combined.take(order)
    chunk_ids = ordered.column("chunk_id").to_pylist()
    first = [i for i, cid in enumerate(chunk_ids) if i == 0 or cid != chunk_ids[i - 1]]
    return ordered.take(pa.array(first, pa.int64()))
