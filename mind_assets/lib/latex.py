"""Where the math is in LaTeX-bearing text: inline and display math and environments.

Used by chunking (never cut inside math) and by the filters (measure prose apart from math).
"""

from __future__ import annotations

import re

_OPENERS = re.compile(r"\\\\|\\\$|\\begin\{([^}]+)\}|\\\[|\\\(|\$\$|\$")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def protected_spans(text: str) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, end) spans of math and environments."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while True:
        match = _OPENERS.search(text, pos)
        if match is None:
            return spans
        token, start = match.group(), match.start()
        end: int | None = None
        if token in ("\\\\", "\\$"):  # a line break or an escaped dollar, not math
            pos = match.end()
            continue
        if token.startswith("\\begin"):
            end = _matching_end(text, match.group(1), match.end())
        elif token == "$$":
            close = text.find("$$", match.end())
            end = None if close < 0 else close + 2
        elif token == "$":
            close = _UNESCAPED_DOLLAR.search(text, match.end())
            # A "$" whose partner lies beyond a blank line is a stray dollar (prices, typos).
            if close and "\n\n" not in text[match.end() : close.start()]:
                end = close.end()
        else:
            closer = "\\]" if token == "\\[" else "\\)"
            close = text.find(closer, match.end())
            end = None if close < 0 else close + 2
        if end is None:  # unclosed: treat the opener as literal text
            pos = match.end()
            continue
        spans.append((start, end))
        pos = end


def _matching_end(text: str, name: str, pos: int) -> int | None:
    pattern = re.compile(r"\\(begin|end)\{" + re.escape(name) + r"\}")
    depth = 1
    for match in pattern.finditer(text, pos):
        depth += 1 if match.group(1) == "begin" else -1
        if depth == 0:
            return match.end()
    return None


def split_prose_and_math(text: str) -> tuple[str, list[str]]:
    """The text with every math span replaced by a space, and the math spans themselves."""
    spans = protected_spans(text)
    if not spans:
        return text, []
    prose, math, pos = [], [], 0
    for start, end in spans:
        prose.append(text[pos:start])
        math.append(text[start:end])
        pos = end
    prose.append(text[pos:])
    return " ".join(prose), math
