"""Each rule rejects its bad case and keeps the good one; bad rows never crash the stage."""

import numpy as np
import pytest

from mind_assets.filtering import rules
from mind_assets.filtering.partition import filter_partition
from mind_assets.filtering.rules import FilterBatch, run_filters, strip_preamble
from mind_assets.settings import FilterThresholds
from mind_assets_tests.filter_rows import GOOD, SOURCE, row, table

T = FilterThresholds()
INSTRUCTION = (
    "Rewrite the math text below as a conversation between a Teacher and a Student. The Student "
    "is meeting these ideas for the first time and asks questions whenever something is unclear."
)


def outcome(rule, *rows_, sources=None):
    batch = FilterBatch(
        table(*rows_), sources or [SOURCE] * len(rows_), T, {"teacher_student": INSTRUCTION}
    )
    return rule(batch, T)


def passed(rule, text=GOOD, source=SOURCE, **overrides):
    return bool(outcome(rule, row(text, **overrides), sources=[source]).passed[0])


def test_good_conversation_passes_every_rule():
    result = run_filters(table(row()), [SOURCE], T, {"teacher_student": INSTRUCTION})
    assert result.rejected_by == [[]]


def test_reject_truncated():
    assert passed(rules.reject_truncated)
    assert not passed(rules.reject_truncated, finish_reason="length")


def test_reject_too_short_by_tokens_and_by_length_ratio():
    assert passed(rules.reject_too_short)
    assert not passed(rules.reject_too_short, completion_tokens=10)
    assert not passed(rules.reject_too_short, text="Teacher: Primes.\nStudent: Yes.")


def test_reject_not_a_conversation():
    assert passed(rules.reject_not_a_conversation)
    prose = "Euclid proved there are infinitely many primes by considering a product plus one."
    assert not passed(rules.reject_not_a_conversation, text=prose)
    monologue = "Teacher: a\nTeacher: b\nTeacher: c\nStudent: d"
    assert not passed(rules.reject_not_a_conversation, text=monologue)


def test_reject_degenerate_repetition():
    assert passed(rules.reject_degenerate_repetition)
    looping = "Teacher: The prime is two.\nStudent: The prime is two.\n" * 20
    assert not passed(rules.reject_degenerate_repetition, text=looping)
    stuck = "Teacher: " + "so the product plus one is a new prime " * 30
    assert not passed(rules.reject_degenerate_repetition, text=stuck)


def test_reject_boilerplate_refusals_but_strip_preambles():
    assert passed(rules.reject_boilerplate)
    refusal = "I'm sorry, but I can't help with that request."
    assert not passed(rules.reject_boilerplate, text=refusal)
    assert not passed(rules.reject_boilerplate, text="As an AI, I think primes are fun.\n" + GOOD)
    text, stripped = strip_preamble("Sure! Here is the conversation between them:\n\n" + GOOD)
    assert stripped and text == GOOD
    assert strip_preamble(GOOD) == (GOOD, False)


def test_reject_prompt_leakage():
    assert passed(rules.reject_prompt_leakage)
    leaked = GOOD + "\nStudent: " + INSTRUCTION
    assert not passed(rules.reject_prompt_leakage, text=leaked)


def test_reject_unfaithful():
    assert passed(rules.reject_unfaithful)
    invented = (
        "Teacher: The Riemann hypothesis concerns zeros of the zeta function on the critical "
        "line, studied by Riemann in Germany.\nStudent: Tell me about Hilbert spaces and "
        "Banach algebras instead.\nTeacher: Certainly, functional analysis generalizes "
        "geometry to infinite dimensions."
    )
    assert not passed(rules.reject_unfaithful, text=invented)


def test_reject_non_text_is_math_aware():
    assert passed(rules.reject_non_text)
    heavy_math = (
        "Teacher: We compute $\\sum_{k=1}^{n} (2k-1) = n^2$ and $\\int_0^1 x^2 dx = \\frac13$.\n"
        "Student: And then $$\\prod_{p \\le x} (1 - p^{-1})^{-1} \\ge \\log x$$ follows?\n"
        "Teacher: Yes, that is the step we need for the bound."
    )
    assert passed(rules.reject_non_text, text=heavy_math)
    garbage = "Teacher: #@!%^&*(){}[]<>~`|\\ #@!%^&*(){}[]<>~`|\n" * 5 + "Student: ###"
    assert not passed(rules.reject_non_text, text=garbage)
    german = "Lehrer: Die Primzahlen sind unendlich viele, weil Euklid es bewiesen hat.\n" * 3
    assert not passed(rules.reject_non_text, text=german)


def test_reject_duplicate_exact_and_near():
    near = GOOD.replace("Exactly.", "Exactly right.")
    result = outcome(
        rules.reject_duplicate, row(GOOD, 0), row(GOOD, 1), row(near, 2), row(SOURCE, 3)
    )
    assert result.passed.tolist() == [True, False, False, True]
    assert result.value.tolist() == [0.0, 2.0, 1.0, 0.0]


def test_every_rule_is_named_and_documented():
    assert set(rules.RULES) >= {
        "truncated",
        "too_short",
        "not_a_conversation",
        "degenerate_repetition",
        "boilerplate",
        "prompt_leakage",
        "unfaithful",
        "non_text",
        "duplicate",
    }
    for function in rules.RULES.values():
        assert function.__doc__ and function.__name__.startswith("reject_")


@pytest.mark.parametrize(
    ("case", "bad_row", "source", "expected_rule"),
    [
        ("null text", row(None, 1), SOURCE, "missing_text"),
        ("1 MB conversation", row("Teacher: " + "prime " * 200_000, 1), SOURCE, "oversized"),
        ("binary garbage", row("\x00\xff\x13\x10\ufffd" * 400, 1), SOURCE, "non_text"),
        ("missing source chunk", row(GOOD.replace("Today", "Now"), 1), None, "missing_source"),
    ],
)
def test_bad_rows_are_rejected_with_a_reason_not_a_crash(case, bad_row, source, expected_rule):
    generated = table(row(GOOD, 0), bad_row)
    texts = {"d#0": SOURCE} | ({"d#1": source} if source else {})
    partition = filter_partition(
        generated, texts, T, {"teacher_student": INSTRUCTION}, shard="s", style="teacher_student"
    )
    assert partition.accepted.num_rows == 1
    quarantined = partition.quarantine.to_pylist()
    assert len(quarantined) == 1 and expected_rule in quarantined[0]["rejected_by"], case
    assert partition.decisions.num_rows == 2 * len(rules.RULES)


def test_decisions_record_every_rule_for_every_row():
    generated = table(row(GOOD, 0), row("short", 1))
    partition = filter_partition(
        generated, {"d#0": SOURCE, "d#1": SOURCE}, T, {}, shard="s", style="teacher_student"
    )
    decisions = partition.decisions.to_pylist()
    assert {(d["conversation_id"], d["rule"]) for d in decisions} == {
        (c, r) for c in ("c0", "c1") for r in rules.RULES
    }
    rejected = {d["rule"] for d in decisions if d["conversation_id"] == "c1" and not d["passed"]}
    assert rejected == set(partition.quarantine.to_pylist()[0]["rejected_by"])
    assert np.isfinite([d["value"] for d in decisions]).all()


def test_real_napkin_math_is_not_rejected_wholesale_as_non_text():
    # datatrove's Gopher filters kept 2.4% of napkin chunks; prose-vs-math measurement must not.
    from mind_assets_tests.conftest import napkin_sections

    texts = [section["text"] for section in napkin_sections(200)]
    batch = FilterBatch(table(*[row(t, i) for i, t in enumerate(texts)]), texts, T, {})
    kept = rules.reject_non_text(batch, T).passed.mean()
    repetition_kept = rules.reject_degenerate_repetition(batch, T).passed.mean()
    assert kept > 0.9 and repetition_kept > 0.9, (kept, repetition_kept)


def test_a_disabled_rule_is_not_applied_and_an_unknown_one_is_refused():
    cut = row(finish_reason="length")
    strict = run_filters(table(cut), [SOURCE], T, {"teacher_student": INSTRUCTION})
    assert strict.rejected_by == [["truncated"]]
    relaxed = FilterThresholds(disabled_rules=["truncated"])
    result = run_filters(table(cut), [SOURCE], relaxed, {"teacher_student": INSTRUCTION})
    assert result.rejected_by == [[]] and "truncated" not in result.counts
    misspelt = FilterThresholds(disabled_rules=["truncate"])
    with pytest.raises(ValueError, match="unknown filter rules \\['truncate'\\]"):
        run_filters(table(cut), [SOURCE], misspelt, {"teacher_student": INSTRUCTION})


def test_the_paper_profile_runs_only_length_and_turn_rules_and_each_row_records_its_profile():
    # The same generations under both profiles: repeated lines and a copy of the instruction are
    # strict-only rejections; a one-liner fails both (too short, not a conversation).
    repeated = "\n".join([GOOD] + ["Student: I see.\nTeacher: Yes."] * 12)
    generated = table(row(GOOD, 0), row(repeated, 1), row(GOOD, 2), row("Teacher: hi", 3))
    texts = {f"d#{i}": SOURCE for i in range(4)}
    kept = {}
    for profile in ("strict", "paper"):
        partition = filter_partition(
            generated,
            texts,
            FilterThresholds(profile=profile),
            {"teacher_student": INSTRUCTION},
            shard="s",
            style="teacher_student",
        )
        kept[profile] = sorted(partition.accepted.column("conversation_id").to_pylist())
        judged = set(partition.decisions.column("rule").to_pylist())
        assert judged == set(rules.PROFILE_RULES[profile])
        assert set(partition.accepted.column("filter_profile").to_pylist()) <= {profile}
        assert set(partition.quarantine.column("filter_profile").to_pylist()) == {profile}
    assert set(rules.PROFILE_RULES["paper"]) < set(rules.RULES)
    # c2 repeats c0 word for word: a strict-only `duplicate`; c1's repetition is strict-only too.
    assert kept["strict"] == ["c0"]
    assert kept["paper"] == ["c0", "c1", "c2"]
