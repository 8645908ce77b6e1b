"""Asset checks of `filtered_conversations`, as plain functions over the files just written."""

from __future__ import annotations

from pathlib import Path

from mind_assets.conversations.schema import LINEAGE_COLUMNS
from mind_assets.filtering.schema import FILTERED_SCHEMA
from mind_assets.lib.report import CheckOutcome
from mind_assets.lib.storage import output_rows, read_output

# name -> (blocking, description). Blocking checks stop downstream assets in the same run.
FILTER_CHECKS: dict[str, tuple[bool, str]] = {
    "acceptance_rate_above_floor": (
        False,
        "Accepted share of generated rows is at least the style's configured floor.",
    ),
    "not_empty": (True, "The partition kept at least one conversation."),
    "schema_matches": (True, "The accepted parquet has exactly the filtered-conversation schema."),
    "lineage_non_null": (True, "Every accepted row has all lineage columns filled."),
    "near_duplicate_rate_below_bound": (
        False,
        "Exact and near duplicates are at most the configured share of generated rows.",
    ),
    "quarantine_accounts_for_all_rows": (
        True,
        "accepted + quarantined = generated: no row vanished.",
    ),
}


def evaluate_filter_checks(
    accepted_path: Path,
    quarantine_path: Path,
    *,
    generated_rows: int,
    duplicate_rejections: int,
    acceptance_floor: float,
    max_near_duplicate_rate: float,
) -> list[CheckOutcome]:
    accepted = read_output(accepted_path)
    quarantined = output_rows(quarantine_path)
    rate = accepted.num_rows / generated_rows if generated_rows else 0.0
    expected = {(f.name, str(f.type)) for f in FILTERED_SCHEMA}
    actual = {(f.name, str(f.type)) for f in accepted.schema}
    null_lineage = {
        c: accepted.column(c).null_count if c in accepted.column_names else accepted.num_rows
        for c in LINEAGE_COLUMNS
    }
    null_lineage = {c: n for c, n in null_lineage.items() if n}
    texts = accepted.column("text") if "text" in accepted.column_names else None
    blank_text = 0 if texts is None else sum(1 for t in texts.to_pylist() if not (t or "").strip())
    duplicate_rate = duplicate_rejections / generated_rows if generated_rows else 0.0
    return [
        CheckOutcome(
            "acceptance_rate_above_floor",
            rate >= acceptance_floor,
            {"acceptance_rate": rate, "floor": acceptance_floor},
        ),
        CheckOutcome(
            "not_empty",
            accepted.num_rows > 0 and blank_text == 0,
            {"accepted_rows": accepted.num_rows, "blank_texts": blank_text},
        ),
        CheckOutcome(
            "schema_matches",
            expected == actual,
            {
                "missing": sorted(n for n, _ in expected - actual),
                "unexpected": sorted(n for n, _ in actual - expected),
            },
        ),
        CheckOutcome("lineage_non_null", not null_lineage, {"null_counts": null_lineage}),
        CheckOutcome(
            "near_duplicate_rate_below_bound",
            duplicate_rate <= max_near_duplicate_rate,
            {"duplicate_rate": duplicate_rate, "bound": max_near_duplicate_rate},
        ),
        CheckOutcome(
            "quarantine_accounts_for_all_rows",
            accepted.num_rows + quarantined == generated_rows,
            {
                "accepted": accepted.num_rows,
                "quarantined": quarantined,
                "generated": generated_rows,
            },
        ),
    ]
