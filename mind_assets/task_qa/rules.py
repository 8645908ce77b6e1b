"""Filters for generated task items. Each is a named function over the candidate items that
returns, per item, whether it passed and why not; a rejected item keeps every reason."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mind_assets.decontamination.index import Match
from mind_assets.lib import math_equality
from mind_assets.lib.minhash import MinHasher, near_duplicate_groups
from mind_assets.lib.text import normalise, words
from mind_assets.settings import TaskQASettings
from mind_assets.task_qa.conversion import option_dependent_answer, option_reference


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
    # How the answer is checked when it is neither a choice nor math: `exact_match` (the task's
    # own lm-eval metric, with `metric_options`) or `free_text` (no answer check, no length check).
    metric: str = ""
    metric_options: dict[str, Any] = field(default_factory=dict)
    conversion: str = ""  # how the open-ended stem was rewritten from the multiple-choice one


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
    reasons = []
    for c in items:
        if not c.is_math or c.parse_error:
            reasons.append("")
            continue
        stated = math_equality.parse(c.answer)
        if not stated:
            reasons.append("math_mismatch: final answer does not parse")
            continue
        numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", c.solution)
        derived = math_equality.parse(numbers[-1].replace(",", "")) if numbers else []
        reasons.append("" if derived and math_equality.verify(stated, derived) else "math_mismatch")
    return reasons


def reject_metric_mismatch(items: Sequence[Candidate], **_: object) -> list[str]:
    """Non-math generative items, judged by their task's own lm-eval metric (exact match with the
    task's normalisation): the answer must be one the task could score (not cut by the task's
    stop sequences, not empty once normalised), and a worked solution must reach it."""
    reasons = []
    for c in items:
        if c.metric != "exact_match" or c.parse_error:
            reasons.append("")
            continue
        options = dict(c.metric_options)
        until = [u for u in options.pop("until", []) if u]
        answer = c.answer.strip().rstrip(".").strip()
        # Generation stops at the first stop sequence in the text.
        cut = min((u for u in until if u in answer), key=answer.index, default=None)
        if not normalise_for_metric(answer, options).strip():
            reasons.append("metric_mismatch: the answer is empty once normalised")
        elif cut is not None:
            reasons.append(f"metric_mismatch: the task stops generating at {cut!r}")
        elif c.solution.strip() and not solution_reaches(c.solution, answer, options):
            reasons.append("metric_mismatch")
        else:
            reasons.append("")
    return reasons


def normalise_for_metric(text: str, options: Mapping[str, Any]) -> str:
    """`text` as lm-eval's exact match compares it under the task's options."""
    for pattern in options.get("regexes_to_ignore") or []:
        text = re.sub(pattern, "", text)
    if options.get("ignore_case"):
        text = text.lower()
    if options.get("ignore_punctuation"):
        text = re.sub(r"[!-/:-@\[-`{-~]", "", text)
    if options.get("ignore_numbers"):
        text = re.sub(r"\d", "", text)
    return " ".join(text.split())


_STATED = re.compile(r"(?i)\b(?:the\s+(?:final\s+)?answer\s+is|answer:)\s*(.+)$")


def solution_reaches(solution: str, answer: str, options: Mapping[str, Any]) -> bool:
    """The solution's conclusion scores 1 under the task's exact match against `answer`: its
    "the answer is ..." span matches exactly, or its last sentence contains the answer whole."""
    from lm_eval.api.metrics import exact_match_hf_evaluate

    metric = {k: v for k, v in options.items() if k != "until"}
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", solution.strip()) if s.strip()]
    last = sentences[-1] if sentences else ""
    stated = _STATED.search(last)
    if stated:
        span = stated.group(1).strip().rstrip(".")
        if exact_match_hf_evaluate([span], [answer], **metric)["exact_match"] == 1.0:
            return True
    target = normalise_for_metric(answer, metric)
    return f" {target} " in f" {normalise_for_metric(last, metric)} "


def reject_option_dependent_stem(items: Sequence[Candidate], **_: object) -> list[str]:
    """Open-ended form: a stem or answer that points at options the form does not show ("Which
    of the following…", "all of the above", "option B") cannot be answered."""
    reasons = []
    for c in items:
        if c.form != "open_ended" or c.parse_error or c.is_math:
            reasons.append("")
        elif label := option_reference(c.question):
            reasons.append(f"option_dependent_stem: {label}")
        elif option_dependent_answer(c.answer):
            reasons.append("option_dependent_stem: the answer names options")
        else:
            reasons.append("")
    return reasons


def reject_not_short_answer(
    items: Sequence[Candidate], *, thresholds: TaskQASettings, **_: object
) -> list[str]:
    """Open-ended form: the answer is a short answer (at most `short_answer_words` words), as in
    CrossThink's short-form open-ended template; free-text tasks (translation, summaries) are
    exempt."""
    limit = thresholds.short_answer_words
    reasons = []
    for c in items:
        n = len(c.answer.split())
        if c.form != "open_ended" or c.parse_error or c.metric == "free_text" or n <= limit:
            reasons.append("")
        else:
            reasons.append(f"not_short_answer: {n} words")
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
    contamination: Sequence[Sequence[Match]] | None = None,
    **_: object,
) -> list[str]:
    """Holds an item of an evaluation benchmark: the platform's one decontamination rule
    (`mind_assets/decontamination/`), against the benchmark index every blendable row is
    checked against, its task's own evaluation splits among them. The reason names the
    benchmark, the item and the matched span."""
    if contamination is None:
        return [""] * len(items)
    return [found[0].reason() if found else "" for found in contamination]


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
    "metric_mismatch": reject_metric_mismatch,
    "option_dependent_stem": reject_option_dependent_stem,
    "not_short_answer": reject_not_short_answer,
    "missing_reasoning": reject_missing_reasoning,
    "duplicate": reject_duplicate,
    "copy_of_seed": reject_copy_of_seed,
    "contaminated": reject_contaminated,
}


def run_task_rules(
    items: Sequence[Candidate],
    *,
    seed_questions: Sequence[str],
    thresholds: TaskQASettings,
    contamination: Sequence[Sequence[Match]] | None = None,
) -> list[list[str]]:
    """Per item, the reasons it is rejected (empty when accepted). `contamination`: per item,
    the benchmark items the decontamination scan found in it (`Decontamination.scan` over
    `item_text`)."""
    per_rule = [
        rule(
            items,
            seed_questions=seed_questions,
            contamination=contamination,
            thresholds=thresholds,
        )
        for rule in TASK_QA_RULES.values()
    ]
    return [[r for r in reasons if r] for reasons in zip(*per_rule, strict=True)] if items else []


def item_text(candidate: Candidate) -> str:
    """What the decontamination rule reads of an item: everything a row of it may hold."""
    parts = [candidate.question, *candidate.choices, candidate.answer, candidate.reasoning]
    parts += [f"{choice} {why}" for choice, why in candidate.distractors]
    return "\n".join(p for p in parts if p)
