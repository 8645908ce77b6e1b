"""Accepted rows and their quarantine, written one way for every stage that rejects rows.

The rule interface every stage shares is the quarantine's `rejected_by` column: each rejected
row lists the rules that rejected it, each as `rule` or `rule: detail` (the detail says what the
rule measured). Conversations filtering, task Q&A, solution traces and the Prismatic filter all
hand their split to `write_split`, which checks that contract and writes both files as new
versions at the paths the family declares, in one commit: the quarantine of an accepted version
is found by that version's id (`quarantine_version`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mind_assets.lib.outputs import OutputFamily
from mind_assets.lib.storage import write_split_versions

REJECTED_BY = "rejected_by"


class QuarantineError(ValueError):
    """A split that breaks the quarantine contract: a rejected row that names no rule."""


def rule_name(reason: str) -> str:
    """`"incorrect: 4 != 5"` -> `"incorrect"`."""
    return reason.split(":", 1)[0].strip()


def rejections_per_rule(reasons: Iterable[Iterable[str] | None]) -> Counter[str]:
    """How many rows each rule rejected (a row rejected by two rules counts for both)."""
    return Counter(name for row in reasons for name in {rule_name(r) for r in row or ()})


@dataclass
class SplitRows:
    """Rows sorted one at a time as a stage's rules judge them: accepted, or quarantined with
    the rules that rejected them."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any], rejected_by: list[str]) -> None:
        if rejected_by:
            self.quarantined.append({**row, REJECTED_BY: rejected_by})
        else:
            self.accepted.append(row)

    def tables(self, schema: pa.Schema, quarantine_schema: pa.Schema) -> tuple[pa.Table, pa.Table]:
        """(accepted rows, quarantine) as tables of the family's two schemas."""
        return (
            pa.Table.from_pylist(self.accepted, schema=schema),
            pa.Table.from_pylist(self.quarantined, schema=quarantine_schema),
        )


@dataclass(frozen=True)
class WrittenSplit:
    accepted_path: Path
    quarantine_path: Path
    accepted: int
    quarantined: int
    per_rule: Counter[str]

    @property
    def generated(self) -> int:
        return self.accepted + self.quarantined

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.generated if self.generated else 0.0


def write_split(
    family: OutputFamily,
    data_dir: Path,
    keys: Mapping[str, str],
    accepted: pa.Table,
    quarantine: pa.Table,
) -> WrittenSplit:
    """Write one partition's accepted rows and its quarantine as new versions of the family's two
    files, each cast to its declared schema where it fits (see `conform`); refuse a quarantined
    row that names no rule, before anything is written."""
    if family.quarantine_schema is None:
        raise QuarantineError(f"{family.name} declares no quarantine")
    reasons = quarantine.column(REJECTED_BY).to_pylist() if quarantine.num_rows else []
    unexplained = [i for i, r in enumerate(reasons) if not r]
    if unexplained:
        raise QuarantineError(
            f"{family.name} {dict(keys)}: quarantined rows {unexplained[:5]} name no rule"
        )
    accepted_path = family.path(data_dir, keys)
    quarantine_path = family.quarantine_path(data_dir, keys)
    write_split_versions(
        conform(accepted, family.schema),
        accepted_path,
        conform(quarantine, family.quarantine_schema),
        quarantine_path,
    )
    return WrittenSplit(
        accepted_path,
        quarantine_path,
        accepted.num_rows,
        quarantine.num_rows,
        rejections_per_rule(reasons),
    )


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast to the declared schema where the data allows it. A partition that does not fit (null
    lineage, a missing column) keeps its own shape, so the stage's schema and lineage checks
    report it instead of the write failing. The table's own schema metadata (a decontamination
    record) is kept."""
    try:
        conformed = table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError, ValueError):
        return table
    if table.schema.metadata:
        conformed = conformed.replace_schema_metadata(
            {**(schema.metadata or {}), **table.schema.metadata}
        )
    return conformed
