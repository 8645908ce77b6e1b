"""`mind tasks`: the seed catalog as text."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mind_assets.task_qa.catalog import build_catalog


def format_catalog(
    configured_families: list[str], refused: bool = False, mirror_dir: Path | None = None
) -> str:
    """The catalog: refusal counts, then every eligible task with its output type, seed split,
    answer check and dataset licence (from a dataset card on disk when there is one)."""
    entries = build_catalog(mirror_dir)
    eligible = [e for e in entries if e.eligible]
    refusals = [e for e in entries if not e.eligible]
    configured = set(configured_families)
    lines = [
        f"{len(entries)} lm-eval subtasks: {len(eligible)} eligible as seeds, "
        f"{len(refusals)} refused",
        "refused because:",
        *(
            f"  {n:6d}  {reason}"
            for reason, n in Counter(_kind(e.reason) for e in refusals).most_common()
        ),
        "",
        "eligible (* = selected by MIND_TASK_QA__FAMILIES):",
        f"   {'family':40s} {'output type':16s} {'answer check':12s} {'licence':14s} seed split",
    ]
    selected = {e.task for e in eligible if e.task in configured or configured == {"all"}}
    for e in eligible:
        mark = "*" if e.task in selected else " "
        dataset = f"{e.dataset_path}/{e.dataset_name or 'default'}:{e.training_split}"
        lines.append(
            f" {mark} {e.family:40s} {e.output_type or '-':16s} {e.answer_check or '-':12s} "
            f"{e.licence or 'unknown':14s} {dataset}"
        )
    sources = sorted(
        {e.licence_source for e in eligible if e.task in selected and e.licence_source}
    )
    if sources:
        lines += ["", "licences of the selected families were read from:"]
        lines += [f"  {source}" for source in sources]
    if refused:
        lines += ["", "refused:"] + [f"   {e.task:40s} {e.reason}" for e in refusals]
    return "\n".join(lines)


def _kind(reason: str) -> str:
    """Group refusal reasons: drop the quoted split names."""
    return reason.split(" '")[0] if "'" in reason else reason
