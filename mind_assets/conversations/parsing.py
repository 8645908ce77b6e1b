"""Parse a generated conversation into (speaker, text) turns.

Models label turns as `Speaker: text`, often with markdown bold (`**Teacher:**`). The prompt's
declared speaker labels are tried first; otherwise any short label that recurs is accepted, so a
model that renames the speakers (e.g. "Alice" and "Bob") still parses.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_GENERIC_LABEL = re.compile(
    r"^[ \t>#-]*\**\s*(?P<label>[A-Z][A-Za-z0-9 .'\-]{0,29}?)\s*\**\s*:\s*\**\s*(?P<rest>.*)$"
)
# Labels that introduce math structure rather than a speaker.
_NOT_SPEAKERS = {
    "definition",
    "theorem",
    "lemma",
    "proof",
    "example",
    "exercise",
    "problem",
    "solution",
    "answer",
    "question",
    "note",
    "remark",
    "corollary",
    "claim",
    "step",
    "hint",
    "case",
    "conversation",
    "text",
    "context",
    "input",
    "output",
    "title",
    "summary",
}


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str


def _label_pattern(speakers: Sequence[str]) -> re.Pattern[str]:
    names = "|".join(re.escape(s) for s in sorted(speakers, key=len, reverse=True))
    # Small models often write "The Interviewer:" for a declared "Interviewer".
    return re.compile(
        rf"^[ \t>#-]*\**\s*(?:the\s+)?(?P<label>{names})\s*\**\s*:\s*\**\s*(?P<rest>.*)$",
        re.IGNORECASE,
    )


def _split(text: str, pattern: re.Pattern[str], allowed: set[str] | None) -> list[Turn]:
    turns: list[list[str]] = []
    speakers: list[str] = []
    for line in text.splitlines():
        match = pattern.match(line)
        label = match.group("label").strip() if match else None
        if label and (allowed is None or label.lower() in allowed):
            speakers.append(label)
            turns.append([match.group("rest").strip()])
        elif turns:
            turns[-1].append(line)
    return [
        Turn(speaker, "\n".join(lines).strip())
        for speaker, lines in zip(speakers, turns, strict=True)
        if "\n".join(lines).strip()
    ]


def parse_turns(text: str, speakers: Sequence[str] = ()) -> list[Turn]:
    """Turns in order; an empty list when the text does not follow a speaker format."""
    if speakers:
        declared = _split(text, _label_pattern(speakers), None)
        if len({t.speaker.lower() for t in declared}) >= 2:
            return [Turn(_canonical(t.speaker, speakers), t.text) for t in declared]
    counts = Counter(
        m.group("label").strip() for line in text.splitlines() if (m := _GENERIC_LABEL.match(line))
    )
    recurring = {
        label.lower()
        for label, n in counts.items()
        if n >= 2 and label.lower() not in _NOT_SPEAKERS
    }
    if len(recurring) < 2:
        return []
    return _split(text, _GENERIC_LABEL, recurring)


def _canonical(label: str, speakers: Sequence[str]) -> str:
    for speaker in speakers:
        if speaker.lower() == label.lower():
            return speaker
    return label
