"""Final-answer extraction and comparison against a reference, for solution traces.

Extraction looks, in order of how explicit the marker is, for the last `\\boxed{...}` (nested
braces allowed), the last `#### x` line, and the last "The answer is x" / "Final answer: x".
A trace with none of these has no answer and is incorrect: guessing "the last number" would
credit traces that never committed to an answer.

Comparison normalises what GSM8K-style answers vary in (thousands separators, currency and unit
words, trailing periods, unicode minus, `\\dfrac`), then asks `math-verify` whether the two are
mathematically equal, so 1/2, 0.5 and \\frac{1}{2} agree.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

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


def equivalent(candidate: str, reference: str) -> bool:
    """Mathematical equality by math-verify, after normalisation; exact text as a fallback."""
    from math_verify import parse, verify

    a, b = normalize_answer(candidate), normalize_answer(reference)
    if a == b:
        return True
    gold = parse(f"${b}$") or parse(b)
    guess = parse(f"${a}$") or parse(a)
    if not gold or not guess:
        return False
    try:
        return bool(verify(gold, guess))
    except Exception:  # math-verify raises on some malformed LaTeX; not equal then
        return False


def judge(trace_text: str, reference: str) -> Verdict:
    answer, method = extract_answer(trace_text)
    if answer is None:
        return Verdict(None, None, False, method)
    return Verdict(answer, normalize_answer(answer), equivalent(answer, reference), method)


def majority(answers: list[str | None]) -> str | None:
    """The most common normalised answer (ties: the first seen); None when no trace answered."""
    counted = Counter(a for a in answers if a)
    if not counted:
        return None
    best = max(counted.values())
    return next(a for a in answers if a and counted[a] == best)
