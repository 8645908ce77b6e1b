"""Each task Q&A rule on its own: one item it rejects, with the reason it gives, beside one it
keeps. The rules all take the candidates and answer with one reason per item ("" = kept)."""

from __future__ import annotations

import pytest

from mind_assets.decontamination.check import Decontamination
from mind_assets.decontamination.index import NgramIndex
from mind_assets.decontamination.record import IndexVersion
from mind_assets.settings import TaskQASettings
from mind_assets.task_qa.conversion import open_ended_stem
from mind_assets.task_qa.rules import (
    TASK_QA_RULES,
    Candidate,
    item_text,
    reject_answer_not_a_choice,
    reject_contaminated,
    reject_copy_of_seed,
    reject_duplicate,
    reject_math_mismatch,
    reject_metric_mismatch,
    reject_missing_reasoning,
    reject_not_short_answer,
    reject_option_dependent_stem,
    reject_parse_failure,
    run_task_rules,
)

SETTINGS = TaskQASettings()


def benchmark_index(texts: dict[str, list[str]]) -> Decontamination:
    """The decontamination rule over a few benchmark texts: item i of a benchmark is
    `<benchmark>:test:<i>`."""
    names = [name for name, items in texts.items() for _ in items]
    ids = [f"{name}:test:{i}" for name, items in texts.items() for i in range(len(items))]
    flat = [text for items in texts.values() for text in items]
    version = IndexVersion("v", dict.fromkeys(texts, "fp"), {})
    return Decontamination(version, NgramIndex(names, ids, flat))


def contamination(index: Decontamination, items: list[Candidate]):
    return index.scan([item_text(c) for c in items])


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


def test_an_item_sharing_a_long_word_sequence_with_a_benchmark_is_contaminated():
    eval_text = (
        "Natalia sold clips to 48 of her friends in April and then she sold half as many "
        "clips in May"
    )
    items = [
        open_ended(eval_text + ". How many altogether?", "72"),
        open_ended("Natalia sold clips to friends. How many in May if half of 48?", "24"),
    ]
    found = contamination(benchmark_index({"gsm8k": [eval_text]}), items)
    reasons = reject_contaminated(items, contamination=found, thresholds=SETTINGS)
    assert reasons[0].startswith('contaminated: gsm8k gsm8k:test:0: "natalia sold clips to 48')
    assert reasons[1] == ""
    # Without a scan (decontamination off) there is nothing to be contaminated by.
    assert reject_contaminated(items, contamination=None, thresholds=SETTINGS) == ["", ""]


def test_every_rule_is_registered_under_the_name_its_reasons_start_with():
    items = [
        Candidate("open_ended", "", [], "", "", parse_error="bad"),
        mc("Pick one of these two options please", ["a", "b"], "c", reasoning=""),
    ]
    reasons = run_task_rules(items, seed_questions=[], thresholds=SETTINGS)
    assert reasons[0] == ["parse_failure: bad"]
    assert reasons[1] == ["answer_not_a_choice", "missing_reasoning"]
    for name in ("parse_failure", "answer_not_a_choice", "missing_reasoning"):
        assert name in TASK_QA_RULES


@pytest.mark.parametrize("name", sorted(TASK_QA_RULES))
def test_each_rule_answers_one_reason_per_item(name):
    items = [open_ended("What is 3 + 4 in a short sum?", "7", solution="3 + 4 = 7", is_math=True)]
    reasons = TASK_QA_RULES[name](items, seed_questions=[], contamination=[[]], thresholds=SETTINGS)
    assert reasons == [""]


@pytest.mark.parametrize(
    ("stem", "rewritten", "note"),
    [
        (
            "Which of the following is the closest star to Earth?",
            "Which of the following is the closest star to Earth?",  # "closest" compares options
            "",
        ),
        (
            "Which of the following is produced by the leaves of a plant during photosynthesis?",
            "What is produced by the leaves of a plant during photosynthesis?",
            "'which of the following' -> 'what'",
        ),
        (
            "Which of these is NOT a mammal?",
            "Which of these is NOT a mammal?",  # a negation needs the options
            "",
        ),
        (
            "What gas do plants take in from the air? Choose the best answer.",
            "What gas do plants take in from the air?",
            "dropped an instruction about the options",
        ),
        (
            "What gas do plants take in from the air?",
            "What gas do plants take in from the air?",
            "",
        ),
    ],
)
def test_open_ended_stem_is_rewritten_only_where_one_safe_rewrite_exists(stem, rewritten, note):
    assert open_ended_stem(stem) == (rewritten, note)


def test_option_dependent_stems_and_answers_are_rejected_in_the_open_ended_form():
    items = [
        open_ended("Which of the following is the closest star to Earth?", "the Sun"),
        open_ended("Which planet is closest to the Sun? (Mercury is option B.)", "Mercury"),
        open_ended("Which gases do plants release at night?", "none of the above"),
        open_ended("Which gas do plants release at night?", "carbon dioxide"),
        open_ended("Are statements I and III both true of mammals?", "yes"),
        # The multiple-choice form shows its options, so the same stem is fine there.
        mc(
            "Which of the following is the closest star to Earth?", ["the Sun", "Sirius"], "the Sun"
        ),
        # Math items have no options to refer to: points A and B are just points.
        open_ended("Points A and B are 12 km apart; how far is the midpoint?", "6", is_math=True),
    ]
    assert reject_option_dependent_stem(items) == [
        "option_dependent_stem: which of the following",
        "option_dependent_stem: an option letter",
        "option_dependent_stem: the answer names options",
        "",
        "option_dependent_stem: numbered statements",
        "",
        "",
    ]


def test_open_ended_answers_longer_than_the_setting_are_not_short_answers():
    long_answer = "because the moon blocks the light of the sun from reaching the earth that day"
    items = [
        open_ended("Why does a solar eclipse happen?", long_answer),
        open_ended("What blocks the sun in a solar eclipse?", "the moon"),
        mc("Why does a solar eclipse happen?", [long_answer, "clouds"], long_answer),
        # Translation and summaries are free text: their answers are long by nature.
        open_ended(
            "Translate: the cat sleeps on the warm mat today", long_answer, metric="free_text"
        ),
    ]
    assert reject_not_short_answer(items, thresholds=SETTINGS) == [
        "not_short_answer: 15 words",
        "",
        "",
        "",
    ]
    assert (
        reject_not_short_answer(items, thresholds=TaskQASettings(short_answer_words=20)) == [""] * 4
    )


# triviaqa's own lm-eval metric: exact match ignoring case and punctuation, generation stopped
# at a newline, "." or "," (lm_eval/tasks/triviaqa/default.yaml).
TRIVIAQA = {"ignore_case": True, "ignore_punctuation": True, "until": ["\n", ".", ","]}


def trivia(answer: str, solution: str) -> Candidate:
    return open_ended(
        "What is the capital city of France?",
        answer,
        solution=solution,
        metric="exact_match",
        metric_options=TRIVIAQA,
    )


def test_a_non_math_generative_item_is_judged_by_its_task_metric_not_by_math_verify():
    items = [
        trivia("Paris", "France's government sits in its largest city. The answer is paris."),
        trivia("Paris", "France's government sits in its largest city, which is Paris."),
        trivia("Lyon", "France's government sits in its largest city. The answer is Paris."),
        trivia("Washington, D.C.", "The US capital is Washington, D.C."),
        trivia("...", ""),
        trivia("Paris", ""),  # no worked solution: nothing to disagree with
    ]
    assert reject_metric_mismatch(items) == [
        "",
        "",
        "metric_mismatch",
        "metric_mismatch: the task stops generating at ','",
        "metric_mismatch: the answer is empty once normalised",
        "",
    ]
    # None of them is math: math-verify leaves them alone ...
    assert reject_math_mismatch(items) == [""] * len(items)
    # ... where, judged as math, a correct word answer would fail.
    as_math = open_ended(
        "What is the capital city of France?", "Paris", "It is Paris.", is_math=True
    )
    assert reject_math_mismatch([as_math]) == ["math_mismatch: final answer does not parse"]


def test_contamination_names_the_benchmark_and_item_it_came_from():
    gsm8k_test = (
        "Janet has three dozen eggs and sells each of them at the farmers market for two dollars "
        "every single morning"
    )
    arc_test = (
        "Which property of a mineral can be determined just by looking at it in bright light "
        "outdoors on a sunny day"
    )
    items = [
        open_ended(gsm8k_test + ". How much does she make?", "72"),
        open_ended(arc_test + "?", "luster"),
        open_ended("How many legs do three spiders and two ants have together?", "36"),
    ]
    index = benchmark_index({"gsm8k": ["unrelated", gsm8k_test], "arc_easy": [arc_test]})
    reasons = run_task_rules(
        items,
        seed_questions=[],
        thresholds=TaskQASettings(min_reasoning_chars=0),
        contamination=contamination(index, items),
    )
    assert [[r.split(": ", 2)[:2] for r in row] for row in reasons] == [
        [["contaminated", "gsm8k gsm8k:test:1"]],
        [["contaminated", "arc_easy arc_easy:test:0"]],
        [],
    ]
