"""Filtering one partition: split generated rows into accepted and quarantined
tables and the long-format decision table, from the rule outcomes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mind_assets.decontamination.check import (
    CONTAMINATION_FIELD,
    RULE,
    Decontamination,
    contamination_value,
)
from mind_assets.decontamination.index import Match
from mind_assets.decontamination.record import CheckRecord, with_record
from mind_assets.filtering.rules import FilterResult, RuleOutcome, run_filters
from mind_assets.filtering.schema import DECISION_SCHEMA, FILTERED_SCHEMA, QUARANTINE_SCHEMA
from mind_assets.lib.quarantine import conform
from mind_assets.lib.report import CheckOutcome, Markdown, StageSummary, markdown_table
from mind_assets.settings import FilterThresholds


@dataclass
class FilteredPartition:
    accepted: pa.Table
    quarantine: pa.Table
    decisions: pa.Table
    rejections_per_rule: dict[str, int]
    preambles_stripped: int
    decontamination: CheckRecord | None = None

    @property
    def generated(self) -> int:
        return self.accepted.num_rows + self.quarantine.num_rows

    @property
    def acceptance_rate(self) -> float:
        return self.accepted.num_rows / self.generated if self.generated else 0.0


def filter_partition(
    generated: pa.Table,
    chunk_texts: dict[str, str],
    thresholds: FilterThresholds,
    instructions: dict[str, str],
    *,
    shard: str,
    style: str,
    form: str = "conversation",
    decontamination: Decontamination | None = None,
) -> FilteredPartition:
    """Filter one partition; `form` is its style's (`conversation` or `rephrase`). With
    `decontamination`, the benchmark rule `contaminated` runs beside the heuristic rules, in
    every profile: on each conversation and on the chunk it was written from (a test problem
    on a page becomes a test problem in a dialogue, reworded where n-grams miss it)."""
    sources = [chunk_texts.get(cid) for cid in generated.column("chunk_id").to_pylist()]
    result = run_filters(generated, sources, thresholds, instructions, forms={style: form})
    matches = None
    if decontamination is not None:
        matches = decontamination.scan(result.texts, sources, source_label="source chunk")
        if decontamination.on:
            add_contamination_rule(result, matches)

    text_index = generated.schema.get_field_index("text")
    cleaned = generated.set_column(text_index, "text", pa.array(result.texts, pa.string()))
    profile = pa.array([thresholds.profile] * generated.num_rows, pa.string())
    accepted = (
        cleaned.append_column("preamble_stripped", pa.array(result.preamble_stripped, pa.bool_()))
        .append_column("filter_profile", profile)
        .filter(pa.array(result.accepted))
    )

    rejected = np.flatnonzero(~result.accepted)
    values = [
        json.dumps({name: round(float(o.value[i]), 4) for name, o in result.decisions.items()})
        for i in rejected
    ]
    quarantine = (
        generated.take(pa.array(rejected, pa.int64()))
        .append_column(
            "rejected_by",
            pa.array([result.rejected_by[i] for i in rejected], pa.list_(pa.string())),
        )
        .append_column("rule_values", pa.array(values, pa.string()))
        .append_column("filter_profile", profile.take(pa.array(rejected, pa.int64())))
        .append_column(
            CONTAMINATION_FIELD,
            pa.array(
                [contamination_value(matches[i]) if matches else None for i in rejected],
                CONTAMINATION_FIELD.type,
            ),
        )
    )

    ids = generated.column("conversation_id").to_pylist()
    rules = list(result.decisions)
    decisions = pa.Table.from_pydict(
        {
            "shard": [shard] * (len(ids) * len(rules)),
            "style": [style] * (len(ids) * len(rules)),
            "conversation_id": ids * len(rules),
            "rule": [name for name in rules for _ in ids],
            "passed": np.concatenate([result.decisions[r].passed for r in rules]),
            "value": np.concatenate([result.decisions[r].value for r in rules]),
        },
        schema=DECISION_SCHEMA,
    )
    record = decontamination.record(matches) if decontamination and matches is not None else None
    accepted = conform(accepted, FILTERED_SCHEMA)
    return FilteredPartition(
        accepted=with_record(accepted, record) if record else accepted,
        quarantine=conform(quarantine, QUARANTINE_SCHEMA),
        decisions=decisions,
        rejections_per_rule=result.counts,
        preambles_stripped=int(sum(result.preamble_stripped)),
        decontamination=record,
    )


def add_contamination_rule(result: FilterResult, matches: list[list[Match]]) -> None:
    """Add the benchmark rule's outcome to the heuristic rules' (its value: the n-grams a row
    shares with the item it holds, 0 when clean)."""
    contaminated = np.array([bool(m) for m in matches], dtype=bool)
    shared = np.array([max((x.shared_ngrams for x in m), default=0) for m in matches], float)
    result.decisions[RULE] = RuleOutcome(~contaminated, shared)
    result.accepted = result.accepted & ~contaminated
    for reasons, found in zip(result.rejected_by, matches, strict=True):
        reasons += [m.reason() for m in found]
    result.counts[RULE] = int(contaminated.sum())


def summarize_filtered_partition(
    partition: FilteredPartition, checks: list[CheckOutcome], quarantine_path: Path
) -> StageSummary:
    """What one filtered partition reports: acceptance, rejections per rule (a table and one
    number per rule, which the UI plots over time) and the filter checks."""
    counts = partition.rejections_per_rule
    generated = max(partition.generated, 1)
    rule_table = markdown_table(
        [
            {"rule": rule, "rejected": n, "share": f"{n / generated:.0%}"}
            for rule, n in sorted(counts.items(), key=lambda kv: -kv[1])
        ]
    )
    return StageSummary(
        checks=checks,
        metadata={
            "quarantine_path": quarantine_path,
            "generated": partition.generated,
            "accepted": partition.accepted.num_rows,
            "rejected": partition.quarantine.num_rows,
            "acceptance_rate": partition.acceptance_rate,
            "preambles_stripped": partition.preambles_stripped,
            "rejections_per_rule": Markdown(rule_table),
            **{f"rejected/{rule}": n for rule, n in counts.items()},
        },
    )
