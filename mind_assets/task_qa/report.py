"""`mind tasks`: the seed catalog as text."""

from __future__ import annotations

from collections import Counter

from mind_assets.task_qa.catalog import build_catalog


def format_catalog(configured_families: list[str], refused: bool = False) -> str:
    entries = build_catalog()
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
    ]
    for e in eligible:
        mark = "*" if e.task in configured or configured == {"all"} else " "
        dataset = f"{e.dataset_path}/{e.dataset_name or 'default'}:{e.training_split}"
        lines.append(f" {mark} {e.family:40s} {e.output_type or '-':16s} {dataset}")
    if refused:
        lines += ["", "refused:"] + [f"   {e.task:40s} {e.reason}" for e in refusals]
    return "\n".join(lines)


def _kind(reason: str) -> str:
    """Group refusal reasons: drop the quoted split names."""
    return reason.split(" '")[0] if "'" in reason else reason
