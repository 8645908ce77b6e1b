"""Filters for generated task items. Each is a named function over the candidate items that
returns, per item, whether it passed and why not; a rejected item keeps every reason."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mind_assets.lib.minhash import MinHasher, near_duplicate_groups
from mind_assets.lib.text import ngrams, normalise, words
from mind_assets.settings import TaskQASettings


@dataclass
class Candidate:
    """A generated item in one form, before filtering."""

    form: str  # multiple_choice | open_ended
    question: str
    choices: list[str]
    answer: str
    reasoning: str
    solution: str = ""
    parse_error: str = ""
    is_math: bool = False
    distractors: list[tuple[str, str]] = field(default_factory=list)


def reject_parse_failure(items: Sequence[Candidate], **_: object) -> list[str]:
    """The output did not follow the requested format."""
    return [
        f"parse_failure: {c.parse_error}" if c.parse_error or not c.question else "" for c in items
    ]


def reject_answer_not_a_choice(items: Sequence[Candidate], **_: object) -> list[str]:
    """Multiple choice: the answer must be exactly one of the choices, which must be distinct."""
    reasons = []
    for c in items:
        if c.form != "multiple_choice" or c.parse_error:
            reasons.append("")
        elif len({normalise(x) for x in c.choices}) != len(c.choices):
            reasons.append("answer_not_a_choice: duplicate choices")
        elif sum(normalise(x) == normalise(c.answer) for x in c.choices) != 1:
            reasons.append("answer_not_a_choice")
        else:
            reasons.append("")
    return reasons


def reject_math_mismatch(items: Sequence[Candidate], **_: object) -> list[str]:
    """Math items: the stated final answer must parse, and the solution's own last result must
    equal it (math-verify)."""
    from math_verify import parse, verify

    reasons = []
    for c in items:
        if not c.is_math or c.parse_error:
            reasons.append("")
            continue
        stated = parse(c.answer)
        if not stated:
            reasons.append("math_mismatch: final answer does not parse")
            continue
        numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", c.solution)
        derived = parse(numbers[-1].replace(",", "")) if numbers else []
        reasons.append("" if derived and verify(stated, derived) else "math_mismatch")
    return reasons


def reject_missing_reasoning(
    items: Sequence[Candidate], *, thresholds: TaskQASettings, **_: object
) -> list[str]:
    """Every kept item carries the reasoning that links the evidence to its answer."""
    return [
        ""
        if c.parse_error or len(c.reasoning.strip()) >= thresholds.min_reasoning_chars
        else "missing_reasoning"
        for c in items
    ]


def reject_duplicate(
    items: Sequence[Candidate], *, thresholds: TaskQASettings, **_: object
) -> list[str]:
    """Exact or near duplicates of an earlier generated item of the same form."""
    reasons = [""] * len(items)
    for form in {c.form for c in items}:
        rows = [i for i, c in enumerate(items) if c.form == form and c.question]
        seen: dict[str, int] = {}
        for i in rows:
            key = normalise(items[i].question)
            if key in seen:
                reasons[i] = "duplicate"
            seen.setdefault(key, i)
        duplicates = _near_duplicates(
            [items[i].question for i in rows], [], thresholds.near_duplicate_jaccard
        )
        for i, hit in zip(rows, duplicates, strict=True):
            if hit is not None and not reasons[i]:
                reasons[i] = "duplicate: near"
    return reasons


def reject_copy_of_seed(
    items: Sequence[Candidate],
    *,
    seed_questions: Sequence[str],
    thresholds: TaskQASettings,
    **_: object,
) -> list[str]:
    """A generated question that copies (exactly or nearly) one of the task's seed questions."""
    seeds = {normalise(q) for q in seed_questions}
    references = list(seed_questions)
    near = _near_duplicates(
        [c.question for c in items], references, thresholds.near_duplicate_jaccard
    )
    return [
        "copy_of_seed"
        if c.question
        and (normalise(c.question) in seeds or (hit is not None and hit < len(references)))
        else ""
        for c, hit in zip(items, near, strict=True)
    ]


def reject_contaminated(
    items: Sequence[Candidate],
    *,
    eval_ngrams: set[tuple[str, ...]],
    thresholds: TaskQASettings,
    **_: object,
) -> list[str]:
    """Shares a `decontamination_ngram`-word sequence (13 by default, as in GPT-3's
    decontamination) with the task's evaluation splits."""
    n = thresholds.decontamination_ngram
    return [
        "contaminated"
        if eval_ngrams and ngrams(f"{c.question} {c.answer}", n) & eval_ngrams
        else ""
        for c in items
    ]


def _near_duplicates(texts: list[str], references: list[str], threshold: float) -> list[int | None]:
    """For each text, the index of an earlier text or a reference it nearly duplicates; indices
    below len(references) point at references, the rest at texts (offset by len(references))."""
    hasher = MinHasher(128, 3)
    vocabulary: dict[str, int] = {}

    def signature(text: str) -> np.ndarray:
        ids = [vocabulary.setdefault(w, len(vocabulary) + 1) for w in words(text)]
        with np.errstate(over="ignore"):
            return hasher.signature(np.array(ids, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))

    signatures = [signature(t) for t in [*references, *texts]]
    return near_duplicate_groups(signatures, 16, threshold)[len(references) :]


Rule = Callable[..., list[str]]

TASK_QA_RULES: dict[str, Rule] = {
    "parse_failure": reject_parse_failure,
    "answer_not_a_choice": reject_answer_not_a_choice,
    "math_mismatch": reject_math_mismatch,
    "missing_reasoning": reject_missing_reasoning,
    "duplicate": reject_duplicate,
    "copy_of_seed": reject_copy_of_seed,
    "contaminated": reject_contaminated,
}


def run_task_rules(
    items: Sequence[Candidate],
    *,
    seed_questions: Sequence[str],
    eval_texts: Sequence[str],
    thresholds: TaskQASettings,
) -> list[list[str]]:
    """Per item, the reasons it is rejected (empty when accepted)."""
    eval_ngrams: set[tuple[str, ...]] = set()
    for text in eval_texts:
        eval_ngrams |= ngrams(text, thresholds.decontamination_ngram)
    per_rule = [
        rule(items, seed_questions=seed_questions, eval_ngrams=eval_ngrams, thresholds=thresholds)
        for rule in TASK_QA_RULES.values()
    ]
    return [[r for r in reasons if r] for reasons in zip(*per_rule, strict=True)] if items else []
