"""The open-ended form of a multiple-choice item: a stem that only makes sense beside its options
("Which of the following…", "all of the above", "option B") is rewritten when one safe rewrite
exists, and otherwise named, so the `option_dependent_stem` rule can drop it.

CrossThink writes open-ended questions as well as multiple-choice ones (Akter et al. 2025,
arXiv:2504.13941); removing the options from a stem that points at them leaves a question nobody
can answer, so such stems may not survive the conversion.
"""

from __future__ import annotations

import re

# Phrases that point at a list of options; each is reported under its label.
_OPTION_REFERENCES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(pattern, flags))
    for label, pattern, flags in (
        (
            "which of the following",
            r"\b(?:which|what|who)\s+(?:one\s+)?of\s+the\s+following\b",
            re.I,
        ),
        ("which of these", r"\b(?:which|what|who)\s+(?:one\s+)?of\s+these\b", re.I),
        ("all of the above", r"\ball\s+of\s+the\s+(?:above|options|choices)\b", re.I),
        ("none of the above", r"\bnone\s+of\s+the\s+(?:above|options|choices)\b", re.I),
        (
            "the following options",
            r"\bfollowing\s+(?:options|choices|answers|statements)\b",
            re.I,
        ),
        ("options below", r"\b(?:options|choices|answers)\s+(?:below|above|given|listed)\b", re.I),
        ("listed below", r"\blisted\s+(?:below|above)\b", re.I),
        # Case-sensitive: "option B", "(C)", "both A and B", "(A) and (C)", "I and III".
        ("an option letter", r"\b(?:[Oo]ption|[Cc]hoice|[Aa]nswer)\s*\(?[A-H]\)?(?![\w'])", 0),
        ("an option letter", r"(?:^|\s)\([A-H]\)(?=[\s.,?!]|$)", 0),
        ("an option letter", r"\b[Bb]oth\s+\(?[A-H]\)?\s+and\s+\(?[A-H]\)?(?![\w'])", 0),
        ("numbered statements", r"\b(?:I{1,3}|IV)\s+and\s+(?:I{2,3}|IV)\b", 0),
        (
            "choose an option",
            r"\b(?:choose|select|pick)\s+(?:the\s+|one\s+|an\s+)?(?:best\s+|correct\s+|right\s+)?"
            r"(?:option|choice|answer)s?\b",
            re.I,
        ),
    )
)

# Answers that only name other options.
_OPTION_ANSWERS = re.compile(
    r"^\s*(?:all|none|both|neither)(?:\s+of\s+(?:the\s+)?(?:above|them|these|those|options|choices))?\s*\.?\s*$"
    r"|^\s*\(?[A-H]\)?(?:\s*(?:,|and|&)\s*\(?[A-H]\)?)+\s*\.?\s*$",
    re.I,
)

# "Which of the following is X?" may become "What is X?" only where X names a property one
# thing has; a comparison or a negation ("NOT", "EXCEPT", "best", "true") needs the options.
_REWRITABLE = re.compile(
    r"^(?P<lead>.*?)\b(?:which|what)\s+(?:one\s+)?of\s+(?:the\s+following|these)\s+"
    r"(?P<verb>is|are|was|were)\s+(?P<rest>.+)$",
    re.I | re.S,
)
_NEEDS_OPTIONS = re.compile(
    r"\b(?:not|except|true|false|correct|incorrect|best|worst|most|least|likely|unlikely|"
    r"example|examples|closest|statement|option|choice|above|below|following)\b",
    re.I,
)
# A trailing instruction about the options carries no content: dropped from the open form.
_OPTION_INSTRUCTION = re.compile(
    r"\s*(?:\(|\b)(?:choose|select|pick)\s+(?:the\s+|one\s+|an\s+)?(?:best|correct|right)?\s*"
    r"(?:option|choice|answer)s?\b[^.?!]*[.?!]?\)?\s*$",
    re.I,
)


def option_reference(text: str) -> str:
    """The label of the first phrase in `text` that points at a list of options, or ""."""
    for label, pattern in _OPTION_REFERENCES:
        if pattern.search(text):
            return label
    return ""


def option_dependent_answer(answer: str) -> bool:
    """An answer that only names other options ("all of the above", "A and C")."""
    return bool(_OPTION_ANSWERS.match(answer))


def open_ended_stem(question: str) -> tuple[str, str]:
    """(the stem for the open-ended form, what was rewritten or ""). A stem that still refers to
    options after the one safe rewrite is returned unchanged, for the rule to reject."""
    stem = question.strip()
    notes = []
    trimmed = _OPTION_INSTRUCTION.sub("", stem).strip()
    if trimmed and trimmed != stem and not option_reference(trimmed):
        return trimmed, "dropped an instruction about the options"
    match = _REWRITABLE.match(stem)
    if match and not _NEEDS_OPTIONS.search(match.group("rest")):
        lead = match.group("lead")
        what = "What" if not lead.strip() else "what"
        rewritten = f"{lead}{what} {match.group('verb').lower()} {match.group('rest')}".strip()
        if not option_reference(rewritten):
            notes.append("'which of the following' -> 'what'")
            stem = rewritten
    return stem, "; ".join(notes)
