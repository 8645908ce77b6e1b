"""Each task Q&A rule on its own: one item it rejects, with the reason it gives, beside one it
keeps. The rules all take the candidates and answer with one reason per item ("" = kept)."""

from __future__ import annotations

import pytest

from mind_assets.lib.text import ngrams
from mind_assets.settings import TaskQASettings
from mind_assets.task_qa.rules import (
    TASK_QA_RULES,
    Candidate,
    reject_answer_not_a_choice,
    reject_contaminated,
    reject_copy_of_seed,
    reject_duplicate,
    reject_math_mismatch,
    reject_missing_reasoning,
    reject_parse_failure,
    run_task_rules,
)

SETTINGS = TaskQASettings()
REASONING = "The evidence in the passage links directly to this answer."


def mc(question: str, choices: list[str], answer: str, reasoning: str = REASONING) -> Candidate:
    return Candidate("multiple_choice", question, choices, answer, reasoning)


def open_ended(question: str, answer: str, solution: str = "", **kwargs) -> Candidate:
    return Candidate("open_ended", question, [], answer, REASONING, solution=solution, **kwargs)


def test_parse_failure_names_the_error_and_keeps_well_formed_items():
    items = [
        open_ended("What is 2 + 2?", "4"),
        Candidate("open_ended", "", [], "", "", parse_error="no JSON object found"),
        Candidate("open_ended", "", [], "4", REASONING),  # parsed, but no question
    ]
    assert reject_parse_failure(items) == [
        "",
        "parse_failure: no JSON object found",
        "parse_failure: ",
    ]


def test_answer_must_be_exactly_one_of_distinct_choices():
    items = [
        mc(
            "Which gas do plants take in?", ["oxygen", "carbon dioxide", "helium"], "carbon dioxide"
        ),
        mc("Which gas do plants take in?", ["oxygen", "nitrogen"], "carbon dioxide"),
        mc("Which gas do plants take in?", ["oxygen", "oxygen", "carbon dioxide"], "oxygen"),
        open_ended("Which gas do plants take in?", "carbon dioxide"),  # not multiple choice
    ]
    assert reject_answer_not_a_choice(items) == [
        "",
        "answer_not_a_choice",
        "answer_not_a_choice: duplicate choices",
        "",
    ]


def test_math_items_need_a_parsable_answer_that_the_solution_reaches():
    items = [
        open_ended("12 apples, 3 eaten?", "9", solution="12 - 3 = 9", is_math=True),
        open_ended("12 apples, 3 eaten?", "10", solution="12 - 3 = 9", is_math=True),
        open_ended("12 apples, 3 eaten?", "nine-ish", solution="12 - 3 = 9", is_math=True),
        open_ended("Which is heavier?", "the brick", solution="12 kg vs 3 kg"),  # not math
    ]
    reasons = reject_math_mismatch(items)
    assert reasons[0] == "" and reasons[3] == ""
    assert reasons[1] == "math_mismatch"
    assert reasons[2] == "math_mismatch: final answer does not parse"


def test_reasoning_shorter_than_the_setting_is_missing():
    items = [open_ended("Why?", "because"), mc("Why?", ["a", "b"], "a", reasoning="a.")]
    assert reject_missing_reasoning(items, thresholds=SETTINGS) == ["", "missing_reasoning"]
    lenient = TaskQASettings(min_reasoning_chars=1)
    assert reject_missing_reasoning(items, thresholds=lenient) == ["", ""]


def test_duplicates_are_exact_or_near_within_one_form_and_the_first_is_kept():
    question = (
        "A train leaves the station at three in the afternoon travelling at sixty kilometres "
        "per hour towards the city, and a second train leaves the city at the same time "
        "travelling at forty kilometres per hour towards the station; when do they meet"
    )
    items = [
        open_ended(question, "x"),
        open_ended(question.upper() + "  ", "y"),  # the same after normalisation
        open_ended(question.replace("meet", "pass"), "z"),  # the last word changed: near
        mc(question, ["a", "b"], "a"),  # the other form may repeat the question
        open_ended("How many sides does a hexagon have in total when counted", "6"),
    ]
    assert reject_duplicate(items, thresholds=SETTINGS) == [
        "",
        "duplicate",
        "duplicate: near",
        "",
        "",
    ]


def test_a_copy_of_a_seed_question_is_rejected():
    seed = "Which of these is a renewable source of energy used to make electricity at home"
    items = [
        open_ended(seed.lower(), "solar"),
        open_ended(seed.replace("home", "school"), "solar"),  # near copy
        open_ended("What does a thermometer measure in a science lab experiment today", "heat"),
    ]
    assert reject_copy_of_seed(items, seed_questions=[seed], thresholds=SETTINGS) == [
        "copy_of_seed",
        "copy_of_seed",
        "",
    ]


def test_an_item_sharing_a_long_word_sequence_with_an_eval_split_is_contaminated():
    eval_text = (
        "Natalia sold clips to 48 of her friends in April and then she sold half as many "
        "clips in May"
    )
    eval_ngrams = ngrams(eval_text, SETTINGS.decontamination_ngram)
    items = [
        open_ended(eval_text + ". How many altogether?", "72"),
        open_ended("Natalia sold clips to friends. How many in May if half of 48?", "24"),
    ]
    assert reject_contaminated(items, eval_ngrams=eval_ngrams, thresholds=SETTINGS) == [
        "contaminated",
        "",
    ]
    # Without evaluation text there is nothing to be contaminated by.
    assert reject_contaminated(items, eval_ngrams=set(), thresholds=SETTINGS) == ["", ""]


def test_every_rule_is_registered_under_the_name_its_reasons_start_with():
    items = [
        Candidate("open_ended", "", [], "", "", parse_error="bad"),
        mc("Pick one of these two options please", ["a", "b"], "c", reasoning=""),
    ]
    reasons = run_task_rules(items, seed_questions=[], eval_texts=[], thresholds=SETTINGS)
    assert reasons[0] == ["parse_failure: bad"]
    assert reasons[1] == ["answer_not_a_choice", "missing_reasoning"]
    for name in ("parse_failure", "answer_not_a_choice", "missing_reasoning"):
        assert name in TASK_QA_RULES


@pytest.mark.parametrize("name", sorted(TASK_QA_RULES))
def test_each_rule_answers_one_reason_per_item(name):
    items = [open_ended("What is 3 + 4 in a short sum?", "7", solution="3 + 4 = 7", is_math=True)]
    reasons = TASK_QA_RULES[name](items, seed_questions=[], eval_ngrams=set(), thresholds=SETTINGS)
    assert reasons == [""]
