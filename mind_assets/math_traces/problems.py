"""Normalised math problems with reference answers, decontaminated against evaluation splits."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from mind_assets.lib.datasets import load_dataset_split
from mind_assets.lib.text import ngrams, normalise
from mind_assets.math_traces.sources import MathSource
from mind_assets.math_traces.verify import normalize_reference, reference_answer
from mind_assets.settings import ANSWER_TYPES

MATH_PROBLEM_SCHEMA = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),  # path[/name]:split
        pa.field("row_index", pa.int64(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        # None when the source gives none (`plain` sources): majority-vote repair may fill it
        pa.field("reference_answer", pa.string()),
        pa.field("reference_solution", pa.string()),  # annotations stripped; None for `plain`
        # numeric | expression | multiple_choice | yes_no | proof: the form the prompt asks for
        pa.field("answer_type", pa.string(), nullable=False),
    ]
)


class MathSourceError(ValueError):
    """A source row or field that cannot be used; the message names the dataset, row and field."""


@dataclass
class ProblemSet:
    problems: pa.Table
    contaminated: list[dict[str, Any]]  # rows dropped, with the eval split they match
    skipped: list[str]  # rows that could not be read, with the reason


def strip_calculator_annotations(text: str) -> str:
    """GSM8K solutions carry `<<48/2=24>>` calculator calls; they are not text to train on."""
    return re.sub(r"<<[^<>]*>>", "", text)


def problem_id(source: str, question: str) -> str:
    return hashlib.sha256(f"{source}\n{normalise(question)}".encode()).hexdigest()[:16]


def answer_type_of(source: MathSource, row: dict[str, Any], where: str) -> str:
    if source.answer_type_field is None:
        return source.answer_type
    value = str(row.get(source.answer_type_field) or "").strip().lower().replace("-", "_")
    value = {"mcq": "multiple_choice", "yesno": "yes_no", "bool": "yes_no"}.get(value, value)
    if value not in ANSWER_TYPES:
        raise MathSourceError(
            f"{where}: field {source.answer_type_field!r} is {value!r}, not one of {ANSWER_TYPES}"
        )
    return value


def with_choices(question: str, choices: Any, where: str, field: str) -> str:
    """The question with its options listed as `A) ...`, one a line."""
    if not isinstance(choices, list) or not choices:
        raise MathSourceError(f"{where}: field {field!r} must be a non-empty list of options")
    options = "\n".join(f"{chr(65 + i)}) {option}" for i, option in enumerate(choices))
    return f"{question}\n\n{options}"


def normalize_row(source: MathSource, index: int, row: dict[str, Any]) -> dict[str, Any]:
    where = f"{source.dataset_path}:{source.split} row {index}"
    question, answer = row.get(source.question_field), row.get(source.answer_field)
    if not isinstance(question, str) or not question.strip():
        raise MathSourceError(f"{where}: field {source.question_field!r} is missing or empty")
    answer_type = answer_type_of(source, row, where)
    solution = None
    reference: str | None
    if source.answer_format == "gsm8k":
        if answer is None or not str(answer).strip():
            raise MathSourceError(f"{where}: field {source.answer_field!r} is missing or empty")
        try:
            reference = reference_answer(str(answer))
        except ValueError as error:
            raise MathSourceError(f"{where}: field {source.answer_field!r}: {error}") from error
        solution = strip_calculator_annotations(str(answer).rsplit("####", 1)[0]).strip()
    elif answer is None or not str(answer).strip():
        reference = None  # missing: flagged as such, repaired by majority vote or unused
    elif answer_type == "multiple_choice" and isinstance(answer, int):
        reference = chr(65 + answer)  # an option index
    else:
        reference = normalize_reference(str(answer), answer_type)
    question = strip_calculator_annotations(question).strip()
    if source.choices_field is not None:
        options = row.get(source.choices_field)
        question = with_choices(question, options, where, source.choices_field)
    dataset = source.dataset_path + (f"/{source.dataset_name}" if source.dataset_name else "")
    return {
        "problem_id": problem_id(source.name, question),
        "source": source.name,
        "dataset": f"{dataset}:{source.split}",
        "row_index": index,
        "question": question,
        "reference_answer": reference,
        "reference_solution": solution,
        "answer_type": answer_type,
    }


class EvalIndex:
    """N-grams and whole normalised questions of the evaluation splits: a question shorter than
    `n` words is compared whole (normalised) instead."""

    def __init__(self, texts: Iterable[str], n: int) -> None:
        self.n = n
        self.grams: set[tuple[str, ...]] = set()
        self.whole: set[str] = set()
        for text in texts:
            self.whole.add(normalise(text))
            self.grams |= ngrams(text, n)

    def contaminated(self, question: str) -> bool:
        return normalise(question) in self.whole or bool(ngrams(question, self.n) & self.grams)


def load_eval_questions(source: MathSource, mirror_dir: Path | None) -> dict[str, list[str]]:
    """Question texts per evaluation split (for decontamination only)."""
    out = {}
    for split in source.eval_splits:
        dataset = load_dataset_split(
            source.dataset_path, source.dataset_name, split, mirror_dir, label=source.name
        )
        out[split] = [str(doc.get(source.question_field, "")) for doc in dataset]
    return out


def build_problem_set(
    source: MathSource,
    mirror_dir: Path | None,
    *,
    decontamination_ngram: int,
    limit: int | None = None,
    eval_questions: dict[str, list[str]] | None = None,
) -> ProblemSet:
    """Read the source's training split, normalise it, and drop rows that match an eval split."""
    train = load_dataset_split(
        source.dataset_path, source.dataset_name, source.split, mirror_dir, label=source.name
    )
    if eval_questions is None:
        eval_questions = load_eval_questions(source, mirror_dir)
    indexes = {
        split: EvalIndex(texts, decontamination_ngram) for split, texts in eval_questions.items()
    }
    rows, contaminated, skipped, seen = [], [], [], set()
    for index, raw in enumerate(train):
        if limit is not None and len(rows) >= limit:
            break
        try:
            row = normalize_row(source, index, raw)
        except MathSourceError as error:
            skipped.append(str(error))
            continue
        hit = next((s for s, idx in indexes.items() if idx.contaminated(row["question"])), None)
        if hit is not None:
            contaminated.append({"problem_id": row["problem_id"], "row_index": index, "split": hit})
            continue
        if row["problem_id"] in seen:  # the same question twice in the training split
            continue
        seen.add(row["problem_id"])
        rows.append(row)
    return ProblemSet(pa.Table.from_pylist(rows, schema=MATH_PROBLEM_SCHEMA), contaminated, skipped)
