"""Named heuristic filters for generated conversations.

The MIND paper found LLM-based scoring too lenient, so generations are judged by rules. Each rule
is a function `reject_<name>(batch, thresholds) -> RuleOutcome` that returns, for every row,
whether it passed and the measured value; a row is accepted only if it passes every rule. Rules
that reduce to column arithmetic run in pyarrow compute; the text rules share per-row features
(words, hashes, prose outside math) that `FilterBatch` computes once.

Rows of a style whose form is `rephrase` (the paper's Rephrase baseline: the source rewritten,
no speakers) are not conversations: the rules that judge turns (`TURN_RULES`) pass them with the
value -1 (not applicable), while length, degeneration and faithfulness rules judge them as any
other row.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mind_assets.filtering.text_stats import duplicate_ngram_fractions, top_ngram_char_fraction
from mind_assets.lib.latex import split_prose_and_math
from mind_assets.lib.minhash import MinHasher, near_duplicate_groups, ngram_hashes
from mind_assets.settings import FilterThresholds

# Refusals and AI self-reference: the row is rejected.
REFUSAL_PATTERN = (
    r"(?i)\bas an ai\b|\bas a language model\b|\bi(?:'m| am) (?:sorry|unable|not able)\b"
    r"|\bi can(?:not|'t) (?:help|assist|provide|create|fulfil|comply|do that)\b"
    r"|\bi (?:won't|will not) (?:help|assist|provide|create|comply)\b"
)
# A preamble line before the first turn ("Sure! Here is the conversation:"): stripped, not rejected.
_PREAMBLE_LINE = re.compile(
    r"^\s*(?:(?:sure|certainly|okay|ok|of course|absolutely)\b[!,.]?\s*)?"
    r"(?:here(?:'s| is| are)|below is|the following is)\b[^\n]{0,120}"
    r"(?:conversation|dialogue|discussion|debate|interview|exchange)[^\n]{0,80}:?[ \t]*\n+",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_WORDCHARS = re.compile(r"[A-Za-z]+")
_SPACE = re.compile(r"\s+")
_SPREAD = np.uint64(0xD6E8FEB86659FD93)
_WHITESPACE = re.compile(r"\s")
_CONTENT_WORD = re.compile(r"[a-z]{4,}")
# Neither a letter, a digit, whitespace nor ordinary prose punctuation.
_PROSE_SYMBOL = re.compile(r"[^\w\s.,;:!?'\"()\[\]*-]|_")
# Function words: their share separates English prose from code, tables and other languages.
STOPWORDS = frozenset(
    "the be to of and a in that have i it for not on with he as you do at this but his by "
    "from they we say her she or an will my one all would there their what so up out if "
    "about who get which go me when make can like no just him know take into your some could "
    "them see other than then now only come its over also use two how our first well way "
    "even new want because any these give most us is are was were has had does did been "
    "being let why where here each such very more".split()
)


@dataclass(frozen=True)
class RuleOutcome:
    passed: np.ndarray  # bool, one per row
    value: np.ndarray  # float64, the measured quantity the threshold applies to


def strip_preamble(text: str) -> tuple[str, bool]:
    match = _PREAMBLE_LINE.match(text)
    if match and match.end() < len(text):
        return text[match.end() :], True
    return text, False


class FilterBatch:
    """The rows being filtered, and the features rules share."""

    def __init__(
        self,
        table: pa.Table,
        source_texts: list[str | None],
        thresholds: FilterThresholds,
        instructions: dict[str, str],
        forms: dict[str, str] | None = None,
    ) -> None:
        self.table = table
        self.n = table.num_rows
        self.thresholds = thresholds
        self.instructions = instructions
        self.styles: list[str] = table.column("style").to_pylist()
        forms = forms or {}
        # Per row: is it meant to be a conversation? (a style not named in `forms` is one)
        self.is_conversation = np.array(
            [forms.get(style, "conversation") == "conversation" for style in self.styles],
            dtype=bool,
        )
        self.sources = source_texts
        raw = table.column("text").to_pylist()
        self.raw_chars = np.array([len(t) if t else 0 for t in raw], dtype=np.int64)
        # Every rule reads at most max_chars, so a 1 MB row costs no more than a normal one.
        cleaned = [strip_preamble(t[: thresholds.max_chars]) if t else ("", False) for t in raw]
        self.texts = [t for t, _ in cleaned]
        self.preamble_stripped = [s for _, s in cleaned]

    @cached_property
    def prose_and_math(self) -> list[tuple[str, list[str]]]:
        return [split_prose_and_math(t) for t in self.texts]

    @cached_property
    def _tokens(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Whitespace words of every row and of the instructions, tokenized and numbered in Arrow
        (C++): (row offsets, word ids, lower-cased word ids, word lengths), flat over the batch."""
        texts = pa.array([*self.texts, *self.instructions.values()], pa.string())
        words = pc.utf8_split_whitespace(texts)
        flat = words.flatten()
        offsets = words.offsets.to_numpy()
        with np.errstate(over="ignore"):
            ids = _ids(flat)
            lower_ids = _ids(pc.utf8_lower(flat))
        lengths = pc.utf8_length(flat).to_numpy().astype(np.int64)
        return offsets, ids, lower_ids, lengths

    def word_count(self, row: int) -> int:
        offsets = self._tokens[0]
        return int(offsets[row + 1] - offsets[row])

    def word_ids(self, row: int) -> np.ndarray:
        """Ids of the row's words as written (repetition is case-sensitive, like Gopher)."""
        offsets, ids, _, _ = self._tokens
        return ids[offsets[row] : offsets[row + 1]]

    def lower_word_ids(self, row: int) -> np.ndarray:
        offsets, _, lower_ids, _ = self._tokens
        return lower_ids[offsets[row] : offsets[row + 1]]

    def word_lengths(self, row: int) -> np.ndarray:
        offsets, _, _, lengths = self._tokens
        return lengths[offsets[row] : offsets[row + 1]]

    def instruction_word_ids(self) -> dict[str, np.ndarray]:
        """Lower-cased word ids of each style's instruction, in the rows' id space."""
        return {style: self.lower_word_ids(self.n + k) for k, style in enumerate(self.instructions)}

    @cached_property
    def source_features(self) -> list[tuple[set[str], set[str]]]:
        """Per row, its source's (content words, math items), computed once per distinct source:
        every style of a chunk shares one."""
        cache: dict[str, tuple[set[str], set[str]]] = {}
        features = []
        for source in self.sources:
            if not source:
                features.append((set(), set()))
                continue
            known = cache.get(source)
            if known is None:
                _, math = split_prose_and_math(source)
                items = {_SPACE.sub("", m) for m in math} | set(_NUMBER.findall(source))
                items.discard("")
                known = cache[source] = (_content_words(source), items)
            features.append(known)
        return features


def _ids(words: pa.Array) -> np.ndarray:
    """Dictionary-encode words to ids, spread over 64 bits so rolling n-gram hashes mix well."""
    indices = pc.dictionary_encode(words).indices.to_numpy().astype(np.uint64)
    return (indices + np.uint64(1)) * _SPREAD


def _content_words(text: str) -> set[str]:
    return set(_CONTENT_WORD.findall(text.lower())) - STOPWORDS


def _bool(array: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _float(array: pa.Array) -> np.ndarray:
    return np.asarray(
        pc.fill_null(pc.cast(array, pa.float64()), 0.0).to_numpy(zero_copy_only=False)
    )


# --- rules -------------------------------------------------------------------------------------


def reject_missing_text(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """Null or blank text."""
    lengths = np.array([len(x.strip()) for x in batch.texts], dtype=np.float64)
    return RuleOutcome(lengths > 0, lengths)


def reject_oversized(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """Longer than `max_chars`: runaway generations, and a bound on what the other rules read."""
    return RuleOutcome(batch.raw_chars <= t.max_chars, batch.raw_chars.astype(np.float64))


def reject_missing_source(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """The row's source chunk cannot be found, so faithfulness cannot be judged."""
    present = np.array([s is not None and bool(s.strip()) for s in batch.sources], dtype=bool)
    return RuleOutcome(present, present.astype(np.float64))


def reject_truncated(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """The engine stopped at max_tokens (finish_reason 'length'): the conversation is cut off."""
    truncated = _bool(pc.equal(batch.table.column("finish_reason"), "length"))
    return RuleOutcome(~truncated, truncated.astype(np.float64))


def reject_too_short(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """Fewer than `min_completion_tokens` tokens, or shorter than `min_source_length_ratio` of
    the source chunk (a conversation that skips most of its source)."""
    tokens = _float(batch.table.column("completion_tokens"))
    source_chars = np.array([len(s) if s else 0 for s in batch.sources], dtype=np.float64)
    text_chars = np.array([len(x) for x in batch.texts], dtype=np.float64)
    ratio = np.divide(
        text_chars, source_chars, out=np.full(batch.n, np.inf), where=source_chars > 0
    )
    passed = (tokens >= t.min_completion_tokens) & (ratio >= t.min_source_length_ratio)
    return RuleOutcome(passed, np.where(np.isinf(ratio), -1.0, ratio))


def reject_not_a_conversation(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """Fewer than `min_turns` speaker turns, fewer than two speakers, or speakers that do not
    alternate (share of consecutive turns that change speaker below `min_alternation`). A turn
    rule: rows of a rephrase style pass it (see `run_filters`)."""
    passed = np.zeros(batch.n, dtype=bool)
    value = np.zeros(batch.n)
    for i, turns in enumerate(batch.table.column("turns").to_pylist()):
        speakers = [turn["speaker"].lower() for turn in turns or []]
        if len(speakers) < 2:
            continue
        changes = sum(a != b for a, b in itertools.pairwise(speakers))
        value[i] = changes / (len(speakers) - 1)
        passed[i] = (
            len(speakers) >= t.min_turns
            and len(set(speakers)) >= 2
            and value[i] >= t.min_alternation
        )
    return RuleOutcome(passed, value)


def reject_degenerate_repetition(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """Gopher-style repetition: duplicate lines, the most frequent 2-4-gram, and duplicated 5-10-
    grams as shares of the text. The value is the worst statistic divided by its threshold."""
    value = np.zeros(batch.n)
    for i, text in enumerate(batch.texts):
        if batch.word_count(i) < 10:
            continue
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        seen: set[str] = set()
        duplicate_lines = duplicate_chars = 0
        for line in lines:
            if line in seen:
                duplicate_lines += 1
                duplicate_chars += len(line)
            seen.add(line)
        line_chars = sum(len(line) for line in lines) or 1
        worst = max(
            duplicate_lines / len(lines) / t.max_duplicate_line_fraction,
            duplicate_chars / line_chars / t.max_duplicate_line_char_fraction,
        )
        hashes = batch.word_ids(i)
        lengths = batch.word_lengths(i)
        total = int(lengths.sum())
        for n, limit in t.max_top_ngram_char_fraction.items():
            worst = max(worst, top_ngram_char_fraction(hashes, lengths, n, total) / limit)
        limits = t.max_duplicate_ngram_char_fraction
        if worst <= 1:  # otherwise already rejected; longer n-grams cannot change that
            fractions = duplicate_ngram_fractions(hashes, lengths, limits, total)
            worst = max(worst, *(fractions[n] / limits[n] for n in limits))
        value[i] = worst
    return RuleOutcome(value <= 1.0, value)


def reject_boilerplate(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """Refusals and AI self-reference ("as an AI", "I'm sorry, I can't ..."). Preambles such as
    "Here is the conversation:" are stripped before any rule runs, not rejected."""
    hits = _bool(pc.match_substring_regex(pa.array(batch.texts, pa.string()), REFUSAL_PATTERN))
    return RuleOutcome(~hits, hits.astype(np.float64))


def reject_prompt_leakage(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """The output repeats the instruction: any `leakage_ngram`-word sequence of the prompt's
    fixed text appears in it. The value is the number of leaked n-grams."""
    instruction_grams = {
        style: ngram_hashes(ids, t.leakage_ngram)
        for style, ids in batch.instruction_word_ids().items()
    }
    value = np.zeros(batch.n)
    if not any(len(grams) for grams in instruction_grams.values()):
        return RuleOutcome(np.ones(batch.n, dtype=bool), value)
    for i, style in enumerate(batch.styles):
        ids = batch.lower_word_ids(i)
        reference = instruction_grams.get(style)
        if reference is None or len(reference) == 0 or len(ids) < t.leakage_ngram:
            continue
        value[i] = float(np.isin(ngram_hashes(ids, t.leakage_ngram), reference).sum())
    return RuleOutcome(value == 0, value)


def reject_unfaithful(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """Low coverage of the source's math expressions and numbers (when it has at least
    `min_math_items`), or few of the conversation's content words found in the source. The value
    is the lower of the two coverages."""
    passed = np.ones(batch.n, dtype=bool)
    value = np.ones(batch.n)
    for i, (text, source) in enumerate(zip(batch.texts, batch.sources, strict=True)):
        if not source or not text:
            continue
        source_words, items = batch.source_features[i]
        math_coverage = 1.0
        if len(items) >= t.min_math_items:
            compact = _SPACE.sub("", text)
            math_coverage = sum(item in compact for item in items) / len(items)
        words = _content_words(text)
        overlap = len(words & source_words) / len(words) if words else 0.0
        value[i] = min(math_coverage, overlap)
        passed[i] = math_coverage >= t.min_math_coverage and overlap >= t.min_word_overlap
    return RuleOutcome(passed, value)


def reject_non_text(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """Math-aware text quality. Math spans are set aside first; the prose that remains must not be
    mostly symbols (`max_prose_symbol_fraction`) and must read as English (function words make up
    at least `min_prose_stopword_fraction` of its words). A text that is almost all math
    (`max_math_fraction`) is rejected too. The value is the prose symbol fraction."""
    passed = np.ones(batch.n, dtype=bool)
    value = np.zeros(batch.n)
    for i, (text, (prose, math)) in enumerate(zip(batch.texts, batch.prose_and_math, strict=True)):
        if not text:
            continue
        math_chars = sum(len(m) for m in math)
        visible = len(prose) - len(_WHITESPACE.findall(prose))
        symbol_fraction = len(_PROSE_SYMBOL.findall(prose)) / visible if visible else 1.0
        words = _WORDCHARS.findall(prose.lower())
        stopword_fraction = sum(w in STOPWORDS for w in words) / len(words) if words else 0.0
        value[i] = symbol_fraction
        passed[i] = (
            symbol_fraction <= t.max_prose_symbol_fraction
            and stopword_fraction >= t.min_prose_stopword_fraction
            and math_chars / len(text) <= t.max_math_fraction
        )
    return RuleOutcome(passed, value)


def reject_duplicate(batch: FilterBatch, t: FilterThresholds) -> RuleOutcome:
    """Exact duplicates (same text after whitespace and case folding) and near duplicates (MinHash
    estimated Jaccard >= `near_duplicate_jaccard`) of an earlier row. Value: 2 exact, 1 near."""
    value = np.zeros(batch.n)
    first_seen: dict[str, int] = {}
    unique_rows = []
    for i, text in enumerate(batch.texts):
        key = hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest()
        if text and key in first_seen:
            value[i] = 2.0
        else:
            first_seen.setdefault(key, i)
            unique_rows.append(i)
    hasher = MinHasher(t.minhash_permutations, t.shingle_words)
    signatures = [hasher.signature(batch.lower_word_ids(i)) for i in unique_rows]
    for row, duplicate_of in zip(
        unique_rows,
        near_duplicate_groups(signatures, t.minhash_bands, t.near_duplicate_jaccard),
        strict=True,
    ):
        if duplicate_of is not None and batch.texts[row]:
            value[row] = 1.0
    return RuleOutcome(value == 0, value)


Rule = Callable[[FilterBatch, FilterThresholds], RuleOutcome]

RULES: dict[str, Rule] = {
    "missing_text": reject_missing_text,
    "oversized": reject_oversized,
    "missing_source": reject_missing_source,
    "truncated": reject_truncated,
    "too_short": reject_too_short,
    "not_a_conversation": reject_not_a_conversation,
    "degenerate_repetition": reject_degenerate_repetition,
    "boilerplate": reject_boilerplate,
    "prompt_leakage": reject_prompt_leakage,
    "unfaithful": reject_unfaithful,
    "non_text": reject_non_text,
    "duplicate": reject_duplicate,
}

# The rules that judge speaker turns; they do not apply to rows of a rephrase style.
TURN_RULES = frozenset({"not_a_conversation"})

# The rules each profile runs. `paper`: the MIND paper found LLM scoring too lenient and kept
# to simple heuristics on length and turn structure; `strict`: every rule above.
PROFILE_RULES: dict[str, tuple[str, ...]] = {
    "paper": ("missing_text", "missing_source", "too_short", "not_a_conversation"),
    "strict": tuple(RULES),
}


def _not_applicable_to_rephrases(
    name: str, outcome: RuleOutcome, batch: FilterBatch
) -> RuleOutcome:
    """A turn rule passes the rows that are not conversations, with the value -1."""
    if name not in TURN_RULES or batch.is_conversation.all():
        return outcome
    rephrase = ~batch.is_conversation
    return RuleOutcome(outcome.passed | rephrase, np.where(rephrase, -1.0, outcome.value))


@dataclass
class FilterResult:
    accepted: np.ndarray
    rejected_by: list[list[str]]
    decisions: dict[str, RuleOutcome]
    texts: list[str]
    preamble_stripped: list[bool]
    counts: dict[str, int] = field(default_factory=dict)


def run_filters(
    table: pa.Table,
    source_texts: list[str | None],
    thresholds: FilterThresholds,
    instructions: dict[str, str],
    rules: dict[str, Rule] | None = None,
    forms: dict[str, str] | None = None,
) -> FilterResult:
    """Apply the rules of the thresholds' profile (but those they disable) to every row; a row
    is accepted when it passes all of them. `forms` maps a style to its form (`conversation`,
    the default, or `rephrase`)."""
    unknown = sorted(set(thresholds.disabled_rules) - set(rules or RULES))
    if unknown:
        raise ValueError(
            f"unknown filter rules {unknown} in MIND_FILTERS__DISABLED_RULES; the rules are "
            f"{sorted(rules or RULES)}"
        )
    batch = FilterBatch(table, source_texts, thresholds, instructions, forms)
    in_profile = set(PROFILE_RULES[thresholds.profile]) if rules is None else set(rules)
    decisions = {
        name: _not_applicable_to_rephrases(name, rule(batch, thresholds), batch)
        for name, rule in (rules or RULES).items()
        if name in in_profile and name not in thresholds.disabled_rules
    }
    accepted = np.ones(batch.n, dtype=bool)
    for outcome in decisions.values():
        accepted &= outcome.passed
    rejected_by = [
        [name for name, o in decisions.items() if not o.passed[i]] for i in range(batch.n)
    ]
    counts = {name: int((~o.passed).sum()) for name, o in decisions.items()}
    return FilterResult(
        accepted, rejected_by, decisions, batch.texts, batch.preamble_stripped, counts
    )
