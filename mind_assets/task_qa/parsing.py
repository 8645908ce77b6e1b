"""Parse generated task items and their enrichment out of the model's text."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
