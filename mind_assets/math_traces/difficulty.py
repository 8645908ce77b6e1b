"""Per-problem decisions that need every difficulty mode's samples at once: the reference each
trace is checked against (repaired by majority vote where the source's is missing, unreadable or
outvoted, and flagged) and whether the problem is too easy (every difficulty-mode sample solved
it), which then drops its traces in every mode.

Nemotron-Math filters problems by how the strong (high-effort) mode does on them and checks
answers by majority where the reference is unreliable (Du et al., arXiv:2512.15489, as issue 16
reads it); here both decisions are made once per source, from `MIND_MATH__DIFFICULTY_MODES`, so
every mode's partition applies the same ones.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from mind_assets.math_traces.verify import Verdict, compare, majority, reference_readable
from mind_assets.math_traces.verify import judge as verify_trace
from mind_assets.settings import MathSettings

PROBLEM_DIFFICULTY_SCHEMA = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer_type", pa.string(), nullable=False),
        pa.field("original_reference", pa.string()),  # as the source gave it (None: missing)
        pa.field("reference_answer", pa.string()),  # what traces are checked against
        # given | repaired_missing | repaired_unparseable | repaired_outvoted, or unrepaired:
        # missing | unparseable | outvoted (repair off or no confident majority) | proof
        pa.field("reference_status", pa.string(), nullable=False),
        pa.field("majority_answer", pa.string()),
        pa.field("majority_share", pa.float64(), nullable=False),
        pa.field("difficulty_modes", pa.list_(pa.string()), nullable=False),
        pa.field("difficulty_samples", pa.int32(), nullable=False),
        pa.field("difficulty_correct", pa.int32(), nullable=False),
        pa.field("too_easy", pa.bool_(), nullable=False),
    ]
)

REPAIRED = ("repaired_missing", "repaired_unparseable", "repaired_outvoted")
# A problem whose traces cannot be checked at all: they are quarantined `no_reference`.
UNCHECKABLE = ("missing", "unparseable")


def confident_majority(answers: list[str | None], min_share: float) -> tuple[str | None, float]:
    """(the most common answer, its share of all samples, unanswered ones included); the
    answer is None unless it has at least `min_share` and two votes."""
    counted = Counter(a for a in answers if a)
    if not counted or not answers:
        return None, 0.0
    best = max(counted.values())
    top = next(a for a in answers if a and counted[a] == best)
    share = best / len(answers)
    return (top if share >= min_share and best >= 2 else None), share


def decide_reference(
    problem: dict[str, Any], answers: list[str | None], settings: MathSettings
) -> dict[str, Any]:
    """The reference traces of `problem` are checked against, from the difficulty modes'
    normalised answers: the source's, or the confident majority's where the source's is
    missing, unreadable, or contradicted by it (and `reference_repair` is on). Every case other
    than a kept reference is named in `reference_status`."""
    original = problem.get("reference_answer")
    answer_type = problem["answer_type"]
    top, share = confident_majority(answers, settings.repair_min_share)
    if answer_type == "proof":
        status = "proof"
    elif original is None or not original.strip():
        status = "missing"
    elif not reference_readable(original, answer_type):
        status = "unparseable"
    elif top is not None and compare(top, original, answer_type)[0] is False:
        status = "outvoted"
    else:
        status = "given"
    reference = original
    if status in ("missing", "unparseable", "outvoted") and top and settings.reference_repair:
        status, reference = f"repaired_{status}", top
    return {
        "problem_id": problem["problem_id"],
        "source": problem["source"],
        "question": problem["question"],
        "answer_type": answer_type,
        "original_reference": original,
        "reference_answer": reference,
        "reference_status": status,
        "majority_answer": majority(answers),
        "majority_share": round(share, 4),
    }


def too_easy(correct: list[bool]) -> bool:
    """Every difficulty-mode sample solved the problem."""
    return bool(correct) and all(correct)


def difficulty_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=PROBLEM_DIFFICULTY_SCHEMA)


def verdicts_by_problem(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {row["problem_id"]: row for row in table.to_pylist()}


def assess_problems(
    problems: list[dict[str, Any]],
    samples: list[list[Any]],
    settings: MathSettings,
    verify: Callable[[list[Any], dict[str, str | None]], list[Verdict]],
) -> pa.Table:
    """One row per problem from the difficulty modes' samples (`samples`: each mode's trace
    states, with `.problem` and `.text`): the reference decision, then every sample checked
    against that reference by `verify` (math-verify, and the judge model when on)."""
    answers: dict[str, list[str | None]] = defaultdict(list)
    for states in samples:
        for state in states:
            answer_type = state.problem.get("answer_type") or "numeric"
            answers[state.problem["problem_id"]].append(
                verify_trace(state.text, None, answer_type).normalized
            )
    decided = {
        p["problem_id"]: decide_reference(p, answers[p["problem_id"]], settings) for p in problems
    }
    references = {pid: row["reference_answer"] for pid, row in decided.items()}
    correct: dict[str, list[bool]] = defaultdict(list)
    for states in samples:
        for state, verdict in zip(states, verify(states, references), strict=True):
            correct[state.problem["problem_id"]].append(verdict.correct)
    modes = list(settings.difficulty_modes)
    rows = []
    for pid, row in decided.items():
        checkable = row["reference_status"] not in (*UNCHECKABLE, "proof")
        rows.append(
            {
                **row,
                "difficulty_modes": modes,
                "difficulty_samples": len(correct[pid]),
                "difficulty_correct": sum(correct[pid]),
                "too_easy": checkable and too_easy(correct[pid]),
            }
        )
    return difficulty_table(rows)
