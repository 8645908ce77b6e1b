"""The one normal form benchmark texts and checked rows share: lower case, NFKC, no
punctuation or whitespace differences, LaTeX spacing and formatting commands dropped, numbers
written one way. Computed in Arrow (RE2, C++) over whole batches, so tokenising a partition costs
little next to reading it.

What it makes equal: `$48$ clips` and `48 clips`; `\\dfrac{1}{2}`, `\\frac {1}{2}` and `1/2`;
`48,000`, `48{,}000`, `48\\,000` and `48000`; `3.50` and `3.5`; `a\\;+\\;b` and `a + b`;
`\\text{cm}` and `cm`; GSM8K's `<<48/2=24>>` calculator notes and nothing. What it keeps apart:
different numbers (`48` and `52`), number words and digits (`three` and `3`), different words.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

# Bumped whenever the normal form changes: it is part of every index version, so a new normal
# form marks everything checked with the old one as unchecked.
NORMALISATION_VERSION = "1"

# (RE2 pattern, replacement), applied in order to lower-cased NFKC text.
_STEPS: tuple[tuple[str, str], ...] = (
    # GSM8K's calculator annotations: not part of any page that quotes the problem.
    (r"<<[^<>]*>>", " "),
    # Thousands separators, written plainly or in LaTeX: 48,000 48{,}000 48\,000 48\ 000.
    (r"(\d)(?:,|\{,\}|\\,|\\ )(\d\d\d)", r"\1\2"),
    (r"(\d)(?:,|\{,\}|\\,|\\ )(\d\d\d)", r"\1\2"),  # again, for 1,234,567
    # Trailing zeros of decimals: 3.50 -> 3.5, 2.0 -> 2.
    (r"(\d\.\d*?[1-9])0+\b", r"\1"),
    (r"(\d)\.0+\b", r"\1"),
    # LaTeX spacing, sizing and font commands carry no words: \, \; \quad \left \text{...}.
    (r"\\[,;:!> ]", " "),
    (
        r"\\(?:quad|qquad|enspace|thinspace|medspace|thickspace|negthinspace|left|right|bigl|"
        r"bigr|bigg|big|displaystyle|textstyle|scriptstyle|limits|nolimits|text|textrm|textbf|"
        r"textit|mathrm|mathbf|mathit|mathsf|operatorname|mbox|emph|dfrac|tfrac|frac|cdot|"
        r"times|div)\b",
        " ",
    ),
    (r"\\[hv]space\*?\{[^}]*\}", " "),
    # Everything that is neither a letter nor a digit separates words.
    (r"[^\p{L}\p{N}]+", " "),
)


def normalise_batch(texts: pa.Array | Sequence[str | None]) -> pa.Array:
    """Each text in normal form: words separated by single spaces (null stays null)."""
    array = texts if isinstance(texts, pa.Array) else pa.array(list(texts), pa.string())
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    array = pc.utf8_lower(pc.utf8_normalize(array, "NFKC"))
    for pattern, replacement in _STEPS:
        array = pc.replace_substring_regex(array, pattern=pattern, replacement=replacement)
    return pc.utf8_trim_whitespace(array)


def tokenise_batch(texts: pa.Array | Sequence[str | None]) -> pa.ListArray:
    """Each text's words in normal form. A null or empty text becomes `[""]`: one empty word,
    which no index holds, so it matches nothing."""
    return pc.utf8_split_whitespace(pc.fill_null(normalise_batch(texts), ""))


def words(text: str) -> list[str]:
    """One text's words in normal form."""
    return [w for w in tokenise_batch([text])[0].as_py() if w]


def normalise(text: str) -> str:
    """One text in normal form: its words joined by single spaces."""
    return " ".join(words(text))
