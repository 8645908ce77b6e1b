"""Every filter threshold, in one place. Part of MindSettings as `filters`, so each one can be
set from the environment as `MIND_FILTERS__<NAME>` (e.g. MIND_FILTERS__MIN_COMPLETION_TOKENS=80)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


class FilterThresholds(BaseModel):
    # Rules switched off by name, e.g. ["truncated"] to keep conversations cut at the token cap.
    disabled_rules: list[str] = Field(default_factory=list)
    # reject_oversized: longer texts are rejected, and every rule reads at most this many chars.
    max_chars: int = Field(default=60_000, ge=1_000)
    # reject_too_short
    min_completion_tokens: int = Field(default=48, ge=0)
    min_source_length_ratio: float = Field(default=0.25, ge=0)
    # reject_not_a_conversation
    min_turns: int = Field(default=2, ge=1)
    min_alternation: float = Field(default=0.5, ge=0, le=1)
    # reject_degenerate_repetition (Gopher-style, Rae et al. 2021, table A1)
    max_duplicate_line_fraction: float = 0.30
    max_duplicate_line_char_fraction: float = 0.20
    max_top_ngram_char_fraction: dict[int, float] = {2: 0.20, 3: 0.18, 4: 0.16}
    max_duplicate_ngram_char_fraction: dict[int, float] = {
        5: 0.15,
        6: 0.14,
        7: 0.13,
        8: 0.12,
        9: 0.11,
        10: 0.10,
    }
    # reject_prompt_leakage: instruction word n-grams of this length found in the output
    leakage_ngram: int = Field(default=8, ge=4)
    # reject_unfaithful
    min_math_coverage: float = Field(default=0.15, ge=0, le=1)
    min_math_items: int = Field(default=3, ge=1)
    min_word_overlap: float = Field(default=0.25, ge=0, le=1)
    # reject_non_text (measured on prose outside math)
    max_prose_symbol_fraction: float = Field(default=0.30, ge=0, le=1)
    min_prose_stopword_fraction: float = Field(default=0.06, ge=0, le=1)
    max_math_fraction: float = Field(default=0.95, ge=0, le=1)
    # reject_duplicate
    near_duplicate_jaccard: float = Field(default=0.8, gt=0, le=1)
    minhash_permutations: int = Field(default=128, ge=16)
    minhash_bands: int = Field(default=16, ge=1)
    shingle_words: int = Field(default=5, ge=1)
    # asset checks
    min_acceptance_rate: dict[str, float] = Field(
        default_factory=lambda: {"default": 0.0},
        description="Per-style floor for the acceptance-rate check ('default' for the rest).",
    )
    max_near_duplicate_rate: float = Field(default=0.5, ge=0, le=1)

    @field_validator("disabled_rules")
    @classmethod
    def _known_rules(cls, names: list[str]) -> list[str]:
        from mind_assets.filtering.rules import RULES  # rules import this module

        unknown = sorted(set(names) - set(RULES))
        if unknown:
            raise ValueError(f"unknown filter rules {unknown}; the rules are {sorted(RULES)}")
        return names

    def acceptance_floor(self, style: str) -> float:
        return self.min_acceptance_rate.get(style, self.min_acceptance_rate.get("default", 0.0))
