"""Task-seeded generation: few-shot requests from sampled seeds, parsing into both forms
(multiple choice and open-ended, as in Nemotron-CrossThink), and enrichment requests."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import pyarrow as pa
from pydantic import BaseModel

from mind_assets.lib.prompts import PromptFile
from mind_assets.llm.requests import ChatRequest, derive_seed, make_request, sampling_for
from mind_assets.task_qa.parsing import (
    GeneratedEnrichment,
    GeneratedMultipleChoice,
    GeneratedNumericOpenEnded,
    GeneratedOpenEnded,
    ParsedItem,
    parse_enrichment,
    parse_multiple_choice,
    parse_open_ended,
    parse_structured_enrichment,
    parse_structured_item,
    response_schema,
)
from mind_assets.task_qa.rules import Candidate


@dataclass(frozen=True)
class PlannedItem:
    item_index: int
    seed_ids: list[str]
    request: ChatRequest
    seed_cluster: int | None = None  # Prismatic generation mode: the cluster seeds came from
    selection_reason: str = "seeds sampled uniformly"


# (item seed, seed rows, shots) -> (chosen rows, cluster id or None, reason)
SeedPicker = Callable[[int, list[dict], int], tuple[list[dict], int | None, str]]


def plan_items(
    seeds: pa.Table,
    prompt: PromptFile,
    *,
    task: str,
    family: str,
    n_items: int,
    shots: int,
    model_name: str,
    base_seed: int,
    max_tokens_cap: int | None = None,
    seed_picker: SeedPicker | None = None,
    generation_task: bool = False,
    numeric_answer: bool = False,
) -> list[PlannedItem]:
    """n_items few-shot requests; each draws `shots` seeds with an RNG seeded by (family, item),
    uniformly or through `seed_picker` (Prismatic generation mode). A JSON prompt's requests carry
    the schema of the item it asks for (open-ended for generation tasks, else multiple choice)."""
    rows = seeds.to_pylist()
    planned = []
    for index in range(n_items):
        seed = derive_seed(base_seed, family, "item", str(index))
        cluster, reason = None, "seeds sampled uniformly"
        if seed_picker is None:
            examples = random.Random(seed).sample(rows, min(shots, len(rows)))
        else:
            examples, cluster, reason = seed_picker(seed, rows, shots)
        messages = prompt.render(task=task, examples=examples)
        schema = None
        if prompt.output_format == "json":
            schema = response_schema(item_model(generation_task, numeric_answer))
        planned.append(
            PlannedItem(
                item_index=index,
                seed_ids=[e["seed_id"] for e in examples],
                seed_cluster=cluster,
                selection_reason=reason,
                request=make_request(
                    model_name,
                    prompt.version,
                    sampling_for(prompt, seed, max_tokens_cap),
                    messages,
                    json_schema=schema,
                ),
            )
        )
    return planned


def numeric_distractors(answer: str, seed: int, count: int = 3) -> list[str] | None:
    """Plausible wrong numbers near a numeric answer (off by one, doubled, halved, ...)."""
    try:
        value = Fraction(answer.replace(",", "").replace("$", "").strip())
    except (ValueError, ZeroDivisionError):
        return None
    options = [value + 1, value - 1, value * 2, value / 2, value + 10, value * 10]
    rng = random.Random(seed)
    rng.shuffle(options)
    distinct = []
    for option in options:
        text = _format_number(option)
        if option != value and text not in distinct:
            distinct.append(text)
    return distinct[:count]


def _format_number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


def item_model(generation_task: bool, numeric_answer: bool) -> type[BaseModel]:
    """The JSON a structured generation request asks for: a math family's final answer is held
    to a number."""
    if not generation_task:
        return GeneratedMultipleChoice
    return GeneratedNumericOpenEnded if numeric_answer else GeneratedOpenEnded


def parse_item(
    raw_text: str, *, generation_task: bool, structured: bool, numeric_answer: bool = False
) -> ParsedItem:
    if structured:
        return parse_structured_item(
            raw_text, generation_task=generation_task, numeric_answer=numeric_answer
        )
    return parse_open_ended(raw_text) if generation_task else parse_multiple_choice(raw_text)


def item_parses(
    raw_text: str, *, generation_task: bool, structured: bool, numeric_answer: bool = False
) -> bool:
    """Whether a generation reply reads as an item; one that does not is worth re-sampling."""
    parsed = parse_item(
        raw_text,
        generation_task=generation_task,
        structured=structured,
        numeric_answer=numeric_answer,
    )
    return not parsed.error and bool(parsed.question.strip())


def to_candidates(
    raw_text: str,
    *,
    generation_task: bool,
    seed: int,
    structured: bool = False,
    numeric_answer: bool = False,
) -> list[Candidate]:
    """Both forms of one generated item (or one failed candidate per form)."""
    parsed = parse_item(
        raw_text,
        generation_task=generation_task,
        structured=structured,
        numeric_answer=numeric_answer,
    )
    if generation_task:
        open_form = Candidate(
            "open_ended",
            parsed.question,
            [],
            parsed.answer,
            parsed.solution,
            solution=parsed.solution,
            parse_error=parsed.error,
            is_math=True,
        )
        wrong = numeric_distractors(parsed.answer, seed) if not parsed.error else None
        choices = [parsed.answer, *(wrong or [])]
        random.Random(seed).shuffle(choices)
        mc_form = Candidate(
            "multiple_choice",
            parsed.question,
            choices if wrong else [],
            parsed.answer,
            parsed.solution,
            solution=parsed.solution,
            is_math=True,
            parse_error=parsed.error or ("" if wrong else "final answer is not a number"),
        )
        return [mc_form, open_form]
    mc_form = Candidate(
        "multiple_choice",
        parsed.question,
        parsed.choices,
        parsed.answer,
        "",
        parse_error=parsed.error,
    )
    open_form = Candidate(
        "open_ended", parsed.question, [], parsed.answer, "", parse_error=parsed.error
    )
    return [mc_form, open_form]


def plan_enrichment(
    candidate: Candidate,
    prompt: PromptFile,
    *,
    model_name: str,
    seed: int,
    max_tokens_cap: int | None,
) -> ChatRequest:
    messages = prompt.render(
        question=candidate.question, choices=candidate.choices, answer=candidate.answer
    )
    return make_request(
        model_name,
        prompt.version,
        sampling_for(prompt, seed, max_tokens_cap),
        messages,
        json_schema=response_schema(GeneratedEnrichment)
        if prompt.output_format == "json"
        else None,
    )


def enrichment_parses(text: str, *, structured: bool) -> bool:
    """Whether an enrichment reply yields any reasoning: broken or cut JSON yields none, and the
    item would fail `missing_reasoning`."""
    enrichment = parse_structured_enrichment(text) if structured else parse_enrichment(text)
    return bool(enrichment.reasoning.strip())


def apply_enrichment(candidates: list[Candidate], text: str, *, structured: bool = False) -> None:
    """Reasoning and per-distractor explanations onto an item's forms; a math item keeps its own
    worked solution as the reasoning of its open-ended form."""
    enrichment = parse_structured_enrichment(text) if structured else parse_enrichment(text)
    for candidate in candidates:
        if candidate.form == "multiple_choice" or not candidate.solution:
            candidate.reasoning = enrichment.reasoning
        if candidate.form == "multiple_choice":
            candidate.distractors = [
                (choice, why)
                for choice, why in enrichment.distractors
                if choice != candidate.answer
            ]


def training_text(candidate: Candidate) -> str:
    """The text a blend trains on, rendered from the item's fields."""
    lines = [f"Question: {candidate.question}"]
    if candidate.form == "multiple_choice":
        lines += [f"{chr(ord('A') + i)}) {choice}" for i, choice in enumerate(candidate.choices)]
    lines.append(f"Reasoning: {candidate.reasoning}")
    lines.append(f"Answer: {candidate.answer}")
    if candidate.distractors:
        lines.append("Why the other options are wrong:")
        lines += [f"- {choice}: {why}" for choice, why in candidate.distractors]
    return "\n".join(re.sub(r"\s+\n", "\n", line) for line in lines)
