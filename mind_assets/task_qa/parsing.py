"""Parse generated task items and their enrichment out of the model's text: the free-text
format, or JSON following a schema (structured generation)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_QUESTION = re.compile(
    r"^\s*Question:\s*(.+?)\s*(?=^\s*(?:[A-H]\)|Solution:|Answer:|####))", re.S | re.M
)
_OPTION = re.compile(r"^\s*([A-H])\)\s*(.+?)\s*$", re.M)
_ANSWER = re.compile(r"^\s*Answer:\s*(.+?)\s*$", re.M)
# The final-answer marker may end the solution's last line ("... 18 apples. #### 18") or
# stand on a line of its own.
_SOLUTION = re.compile(r"^\s*Solution:\s*(.+?)\s*(?=####)", re.S | re.M)
_FINAL = re.compile(r"####\s*(\S[^\n]*?)\s*$", re.M)
_WRONG = re.compile(r"^\s*Wrong:\s*(.+?)\s*:\s*(.+?)\s*$", re.M)
_CALCULATOR = re.compile(r"<<[^>]*>>")
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass
class ParsedItem:
    question: str = ""
    choices: list[str] = field(default_factory=list)
    answer: str = ""
    solution: str = ""
    error: str = ""  # why parsing failed; empty on success


def parse_multiple_choice(text: str) -> ParsedItem:
    """`Question: ... A) ... D) ... Answer: <text or letter>`; the answer becomes option text."""
    item = ParsedItem()
    question = _QUESTION.search(text)
    options = _OPTION.findall(text)
    answer = _ANSWER.search(text)
    if not question or len(options) < 2 or not answer:
        item.error = "missing " + ", ".join(
            n
            for n, ok in (
                ("question", question),
                ("options", len(options) >= 2),
                ("answer", answer),
            )
            if not ok
        )
        return item
    # Keep the first run of options (A, B, ...) only: later ones belong to trailing chatter.
    letters = [letter for letter, _ in options]
    cut = next((i for i in range(1, len(letters)) if letters[i] <= letters[i - 1]), len(letters))
    item.question = question.group(1).strip()
    item.choices = [choice for _, choice in options[:cut]]
    raw = answer.group(1).strip()
    match = re.fullmatch(r"\(?([A-H])\)?(?:[.)]?\s+(.*))?", raw)
    if match and ord(match.group(1)) - ord("A") < len(item.choices):
        item.answer = item.choices[ord(match.group(1)) - ord("A")]
    else:
        item.answer = raw
    return item


def parse_open_ended(text: str) -> ParsedItem:
    """`Question: ... Solution: ... #### <answer>`; calculator annotations are stripped."""
    item = ParsedItem()
    question = _QUESTION.search(text)
    final = _FINAL.search(text)
    if not question or not final:
        item.error = "missing " + ", ".join(
            n for n, ok in (("question", question), ("final answer", final)) if not ok
        )
        return item
    item.question = question.group(1).strip()
    solution = _SOLUTION.search(text)
    item.solution = _CALCULATOR.sub("", solution.group(1)).strip() if solution else ""
    item.answer = final.group(1).strip()
    return item


@dataclass
class Enrichment:
    reasoning: str
    distractors: list[tuple[str, str]]  # (option, why it is wrong)


def parse_enrichment(text: str) -> Enrichment:
    body = re.sub(r"^\s*Reasoning:\s*", "", text)
    first_wrong = _WRONG.search(body)
    reasoning = body[: first_wrong.start()] if first_wrong else body
    return Enrichment(reasoning.strip(), [(a.strip(), b.strip()) for a, b in _WRONG.findall(body)])


# Structured generation. Each model below is what one request asks the LLM to write; its JSON
# schema constrains decoding (vLLM structured outputs offline, `response_format` or vLLM's
# `structured_outputs` from servers) and the same model validates the reply. String lengths are
# capped so a constrained reply closes its JSON inside the token budget instead of being cut.


class GeneratedMultipleChoice(BaseModel):
    """A new multiple-choice item: the answer is the text of the correct option."""

    model_config = ConfigDict(extra="forbid", title="multiple_choice_item")

    question: str = Field(min_length=1, max_length=600)
    options: list[Annotated[str, Field(min_length=1, max_length=160)]] = Field(
        min_length=2, max_length=5
    )
    answer: str = Field(min_length=1, max_length=160)


class GeneratedOpenEnded(BaseModel):
    """A new problem with a worked solution and a short final answer."""

    model_config = ConfigDict(extra="forbid", title="open_ended_item")

    question: str = Field(min_length=1, max_length=600)
    solution: str = Field(min_length=1, max_length=900)
    final_answer: str = Field(min_length=1, max_length=40)


class GeneratedNumericOpenEnded(GeneratedOpenEnded):
    """A math family's item: decoding can only write a number as the final answer (small models
    otherwise put a sentence there, which no math check can verify)."""

    model_config = ConfigDict(extra="forbid", title="numeric_open_ended_item")

    final_answer: str = Field(
        min_length=1, max_length=40, pattern=r"^-?[0-9][0-9,]*(\.[0-9]+)?(/[0-9]+)?$"
    )


class WrongOption(BaseModel):
    model_config = ConfigDict(extra="forbid", title="wrong_option")

    option: str = Field(min_length=1, max_length=160)
    why_wrong: str = Field(min_length=1, max_length=300)


class GeneratedEnrichment(BaseModel):
    """Why the correct answer follows from the question, and why each distractor is wrong."""

    model_config = ConfigDict(extra="forbid", title="answer_explanation")

    reasoning: str = Field(min_length=1, max_length=800)
    wrong_options: list[WrongOption] = Field(max_length=5)


def response_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_json_reply(text: str, model: type[ModelT]) -> tuple[ModelT | None, str]:
    """The reply as `model`, or None and why not. Tolerant of what servers that ignore the
    schema add: a ```json fence, chatter before or after the object."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    candidates.append(text)
    error = "no JSON object in the reply"
    for candidate in candidates:
        try:
            payload = json.loads(candidate)
        except json.JSONDecodeError as failure:
            error = f"invalid JSON: {failure.msg} at char {failure.pos}"
            continue
        try:
            parsed = model.model_validate(payload)
        except ValidationError as failure:
            first = failure.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "reply"
            return None, f"JSON does not match {model.__name__}: {where}: {first['msg']}"
        # Decoding held to the schema closes a string at its cap even mid-sentence: a text that
        # long is a cut text, not a finished one.
        cut = _strings_at_cap(parsed)
        if cut:
            return None, f"{model.__name__}: {cut} reached its length cap (cut off)"
        return parsed, ""
    return None, error


def _strings_at_cap(value: BaseModel, where: str = "") -> str:
    """The first string field whose length equals its schema's maxLength, by path."""
    for name, info in type(value).model_fields.items():
        path = f"{where}{name}"
        field_value = getattr(value, name)
        items = field_value if isinstance(field_value, list) else [field_value]
        for index, item in enumerate(items):
            item_path = f"{path}[{index}]" if isinstance(field_value, list) else path
            if isinstance(item, BaseModel):
                found = _strings_at_cap(item, item_path + ".")
                if found:
                    return found
            elif isinstance(item, str) and len(item) == _max_length(info, nested=item_path != path):
                return item_path
    return ""


def _max_length(info: Any, *, nested: bool) -> int | None:
    """maxLength of a str field, or of the strings in a list[str] field (`nested`)."""
    if nested:
        args = getattr(info.annotation, "__args__", ())
        metadata = getattr(args[0], "__metadata__", ()) if args else ()
        constraints = [m for entry in metadata for m in getattr(entry, "metadata", [entry])]
    else:
        constraints = info.metadata
    return next((c.max_length for c in constraints if hasattr(c, "max_length")), None)


def parse_structured_item(
    text: str, *, generation_task: bool, numeric_answer: bool = False
) -> ParsedItem:
    """A structured reply as a ParsedItem; falls back to the text format for a server that
    ignored both the schema and the prompt's request for JSON."""
    if generation_task:
        model = GeneratedNumericOpenEnded if numeric_answer else GeneratedOpenEnded
        open_item, error = parse_json_reply(text, model)
        if open_item is not None:
            return ParsedItem(
                question=open_item.question.strip(),
                answer=open_item.final_answer.strip(),
                solution=_CALCULATOR.sub("", open_item.solution).strip(),
            )
        fallback = parse_open_ended(text)
    else:
        mc_item, error = parse_json_reply(text, GeneratedMultipleChoice)
        if mc_item is not None:
            return _multiple_choice_item(mc_item)
        fallback = parse_multiple_choice(text)
    if fallback.error:
        fallback.error = error
    return fallback


def _multiple_choice_item(item: GeneratedMultipleChoice) -> ParsedItem:
    choices = [option.strip() for option in item.options]
    raw = item.answer.strip()
    # Small models answer with the letter despite the schema's description: map it back.
    letter = re.fullmatch(r"\(?([A-E])\)?", raw)
    if letter and ord(letter.group(1)) - ord("A") < len(choices):
        raw = choices[ord(letter.group(1)) - ord("A")]
    return ParsedItem(question=item.question.strip(), choices=choices, answer=raw)


def parse_structured_enrichment(text: str) -> Enrichment:
    parsed, _ = parse_json_reply(text, GeneratedEnrichment)
    if parsed is None:
        if text.lstrip().startswith("{"):
            # Broken JSON is no explanation; the item then fails `missing_reasoning`.
            return Enrichment("", [])
        return parse_enrichment(text)
    return Enrichment(
        parsed.reasoning.strip(),
        [(w.option.strip(), w.why_wrong.strip()) for w in parsed.wrong_options],
    )
