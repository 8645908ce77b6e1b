"""Final-answer extraction and comparison against a reference, for solution traces.

Extraction looks, in order of how explicit the marker is, for the last `\\boxed{...}` (nested
braces allowed), the last `#### x` line, and the last "The answer is x" / "Final answer: x".
A trace with none of these has no answer and is incorrect: guessing "the last number" would
credit traces that never committed to an answer.

Comparison depends on the problem's answer type. Numbers and expressions: normalise what
GSM8K-style answers vary in (thousands separators, currency and unit words, trailing periods,
unicode minus, `\\dfrac`), then ask `math-verify` whether the two are mathematically equal, so
1/2, 0.5 and \\frac{1}{2} agree. Multiple choice compares option letters, yes/no the two words.
When a side cannot be read (math-verify parses nothing, no option letter) the comparison is
undecided rather than false: an optional judge model may decide it. Proofs have no final answer
to check and are never verified.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from mind_assets.lib import math_equality

_ANSWER_IS = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*(?:is)?\s*:?)\s*:?\s*(.+)",
    re.IGNORECASE,
)
# `#### x` wherever the marker stands on its line: models write "... so she pays $18. #### 18"
# as often as GSM8K's own line of its own.
_HASHES = re.compile(r"####\s*(\S[^\n]*?)\s*$", re.MULTILINE)
_UNIT_WORDS = (
    "dollars|dollar|cents|cent|usd|euros|euro|pounds|percent|units|unit|meters|meter|metres|"
    "cm|mm|km|kg|g|lbs|lb|miles|mile|hours|hour|minutes|minute|seconds|second|days|day|weeks|"
    "week|months|month|years|year|inches|inch|feet|foot|ft|liters|liter|litres|gallons|gallon|"
    "people|students|apples|items|pieces|points|marbles|cookies|books|eggs|boxes|mph|km/h"
)
_TRAILING_UNITS = re.compile(
    rf"\s*(?:\\(?:text|mbox|mathrm)\{{\s*)?\b(?:{_UNIT_WORDS})\b\}}?\.?$", re.IGNORECASE
)
_NUMBER_WITH_COMMAS = re.compile(r"(?<![\d.])(-?\d{1,3}(?:,\d{3})+)(?:(\.\d+))?(?!\d)")


@dataclass(frozen=True)
class Verdict:
    extracted: str | None  # the answer as written in the trace, None when it gives none
    normalized: str | None
    correct: bool
    method: str  # which marker the answer came from: boxed, hashes, answer_is, none
    # how the label was reached: exact | math-verify | choice | yes-no | judge, or why there is
    # none: no-answer | undecided | proof
    verified_by: str = "exact"
    judge_reply: str | None = None

    @property
    def decided(self) -> bool:
        return self.verified_by not in ("undecided", "proof")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...}, matching nested braces."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        spaced = text.rfind("\\boxed ")
        if spaced >= 0:  # \boxed 5
            rest = text[spaced + len("\\boxed ") :].split()
            return rest[0].rstrip(".$") if rest else None
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None  # unbalanced: the trace was cut off inside the box


def extract_answer(text: str) -> tuple[str | None, str]:
    """(answer as written, method)."""
    boxed = last_boxed(text)
    if boxed:
        return boxed, "boxed"
    hashes = _HASHES.findall(text)
    if hashes:
        return hashes[-1], "hashes"
    matches = _ANSWER_IS.findall(text)
    if matches:
        answer = matches[-1].strip()
        boxed = last_boxed(answer)
        answer = boxed or answer.split("\n")[0]
        answer = re.split(r"(?<=[\d}])\.\s|\.$", answer)[0]
        return answer.strip().strip("*$ ").rstrip("."), "answer_is"
    return None, "none"


def normalize_answer(answer: str) -> str:
    """Strip formatting that does not change the value."""
    text = answer.strip().replace("\u2212", "-").replace("\\!", "").replace("\\,", "")
    text = text.replace("{,}", "").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = re.sub(r"\\(?:left|right)", "", text)
    text = text.strip("$ ").rstrip(".")
    text = re.sub(r"^\\text\{(.*)\}$", r"\1", text)
    text = re.sub(r"\\%|%", "", text)
    text = re.sub(r"^(?:\\\$|\$|usd\s*|€|£)\s*", "", text, flags=re.I)
    text = re.sub(r"\\\$", "", text)
    for _ in range(3):  # "5 dollars", "12 cm.", "\\text{ hours}"
        stripped = _TRAILING_UNITS.sub("", text).strip()
        if stripped == text or not stripped:
            break
        text = stripped
    text = _NUMBER_WITH_COMMAS.sub(lambda m: m.group(1).replace(",", "") + (m.group(2) or ""), text)
    text = re.sub(r"^(-?\d+)\.0+$", r"\1", text)
    return text.strip()


def reference_answer(gsm8k_answer: str) -> str:
    """The number after `#### ` in a GSM8K answer field."""
    found = _HASHES.findall(gsm8k_answer)
    if not found:
        raise ValueError("GSM8K answer has no '#### <answer>' marker")
    return normalize_answer(found[-1])


def _parse_answer(text: str) -> list:
    """What math-verify reads in an answer: as inline math first, then as written."""
    return math_equality.parse(f"${text}$") or math_equality.parse(text)


def _math_verify(candidate: str, reference: str) -> bool | None:
    """math-verify's equality of two normalised answers; None when either side parses to
    nothing."""
    gold, guess = _parse_answer(reference), _parse_answer(candidate)
    if not gold or not guess:
        return None
    try:
        return math_equality.verify(gold, guess)
    except Exception:  # math-verify raises on some malformed LaTeX; cannot decide then
        return None


_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_FUNCTION_NAMES = re.compile(r"\b(?:sin|cos|tan|cot|sec|csc|log|ln|exp|sqrt|pi|inf|infty|mod)\b")


def wordy(answer: str) -> bool:
    """Whether an answer is words rather than mathematics ("all even numbers", "\\text{none}"):
    math-verify reads words as products of symbols, so it cannot compare them."""
    text = _FUNCTION_NAMES.sub(" ", _LATEX_COMMAND.sub(" ", answer))
    return re.search(r"[A-Za-z]{3,}", text) is not None


_CHOICE = re.compile(r"^\(?([A-Za-z])\)?(?:[.):\s]|$)")
_YES = {"yes", "true", "correct", "y"}
_NO = {"no", "false", "incorrect", "n"}


def choice_letter(answer: str) -> str | None:
    """`B`, `(b)`, `B) 12`, `\\text{B}` -> `B`; None when the answer names no option."""
    text = normalize_answer(answer).strip("*() ").strip()
    match = _CHOICE.match(text) or _CHOICE.match(normalize_answer(answer))
    return match.group(1).upper() if match else None


def yes_no(answer: str) -> str | None:
    word = re.sub(r"[^a-z]", "", normalize_answer(answer).lower())
    return "yes" if word in _YES else "no" if word in _NO else None


def normalize_reference(reference: str, answer_type: str) -> str:
    """A reference in the form answers are compared in: an option letter, yes/no, or the
    normalised expression. Unreadable references are returned normalised (repair judges them)."""
    if answer_type == "multiple_choice":
        return choice_letter(reference) or normalize_answer(reference)
    if answer_type == "yes_no":
        return yes_no(reference) or normalize_answer(reference)
    return normalize_answer(reference)


def reference_readable(reference: str | None, answer_type: str) -> bool:
    """Whether a reference can be checked against at all (proofs have none to check)."""
    if reference is None or not reference.strip():
        return False
    if answer_type == "multiple_choice":
        return choice_letter(reference) is not None
    if answer_type == "yes_no":
        return yes_no(reference) is not None
    if answer_type == "proof":
        return False
    text = normalize_answer(reference)
    if answer_type == "numeric" and re.fullmatch(r"-?\d+(?:\.\d+)?", text):
        return True
    if answer_type == "numeric" and (wordy(text) or not re.search(r"\d", text)):
        return False
    return bool(_parse_answer(text))


def compare(
    candidate: str, reference: str, answer_type: str = "numeric"
) -> tuple[bool | None, str]:
    """(equal, how): True/False when decided, None when undecided, for one answer type."""
    if answer_type == "proof":
        return None, "proof"
    if answer_type == "multiple_choice":
        a, b = choice_letter(candidate), choice_letter(reference)
        return (a == b, "choice") if a and b else (None, "undecided")
    if answer_type == "yes_no":
        a, b = yes_no(candidate), yes_no(reference)
        return (a == b, "yes-no") if a and b else (None, "undecided")
    a, b = normalize_answer(candidate), normalize_answer(reference)
    if a == b:
        return True, "exact"
    if wordy(a) or wordy(b):
        return None, "undecided"
    equal = _math_verify(a, b)
    return (equal, "math-verify") if equal is not None else (None, "undecided")


def equivalent(candidate: str, reference: str) -> bool:
    """Mathematical equality by math-verify, after normalisation; exact text as a fallback
    (undecided counts as not equal)."""
    return bool(compare(candidate, reference)[0])


def judge(trace_text: str, reference: str | None, answer_type: str = "numeric") -> Verdict:
    """The verdict on one trace; `correct` is False unless decided equal (an undecided one can
    go to the judge model: `Verdict.decided`)."""
    answer, method = extract_answer(trace_text)
    if answer_type == "proof":
        return Verdict(answer, normalize_answer(answer) if answer else None, False, method, "proof")
    if answer is None:
        return Verdict(None, None, False, method, "no-answer")
    normalized = normalize_reference(answer, answer_type)
    if reference is None or not reference.strip():
        return Verdict(answer, normalized, False, method, "undecided")
    equal, how = compare(answer, reference, answer_type)
    return Verdict(answer, normalized, bool(equal), method, how)


def majority(answers: list[str | None]) -> str | None:
    """The most common normalised answer (ties: the first seen); None when no trace answered."""
    counted = Counter(a for a in answers if a)
    if not counted:
        return None
    best = max(counted.values())
    return next(a for a in answers if a and counted[a] == best)
