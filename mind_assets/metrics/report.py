"""`mind metrics`: the store's views rendered as plain-text tables."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from mind_assets.metrics.store import metrics_store

REPORT_VIEWS = {
    "acceptance": "Acceptance per shard and style",
    "rejections_per_rule": "Rejections per rule",
    "conversation_lengths": "Conversation length and turns",
    "math_pass_rates": "Solution traces: pass rate and maj@k per source and mode",
    "diversity": "Diversity: G-Vendi and baselines, latest per target",
    "prismatic": "Prismatic rounds: pool, kept items and G-Vendi per round",
    "cost_per_partition": "Cost and usage per partition (latest materialization)",
    "decontamination_removals": "Decontamination: rows each benchmark removed, per asset",
}
# Short names `mind metrics --views` also accepts.
VIEW_ALIASES = {"cost": "cost_per_partition", "decontamination": "decontamination_removals"}


def format_table(table: pa.Table) -> str:
    if table.num_rows == 0:
        return "  (no rows)"
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(table.column_names)]
    line = "  ".join(h.ljust(w) for h, w in zip(table.column_names, widths, strict=True))
    numeric = [
        all(_is_number(v) for v in table.column(i).to_pylist() if v is not None)
        for i in range(table.num_columns)
    ]
    body = [
        "  ".join(
            c.rjust(w) if right else c.ljust(w)
            for c, w, right in zip(r, widths, numeric, strict=True)
        ).rstrip()
        for r in rows
    ]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) or (
        isinstance(value, str) and value.replace(".", "", 1).isdigit()
    )


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


def format_metrics(data_dir: Path, views: list[str] | None = None) -> str:
    store = metrics_store(data_dir)
    if not store.has_metrics():
        return f"no metrics yet under {store.root} (materialize some assets first)"
    views = [VIEW_ALIASES.get(v, v) for v in views] if views else None
    unknown = set(views or ()) - set(REPORT_VIEWS)
    if unknown:
        choices = sorted([*REPORT_VIEWS, *VIEW_ALIASES])
        raise ValueError(f"unknown view(s) {sorted(unknown)}; choose from {choices}")
    sections = []
    for view in views or list(REPORT_VIEWS):
        title = REPORT_VIEWS.get(view, view)
        sections.append(f"== {title} ==\n{format_table(store.query(f'SELECT * FROM {view}'))}")
    return "\n\n".join(sections)
