"""Generated task items parsed out of the model's text, in the layouts models actually write."""

from __future__ import annotations

import pytest

from mind_assets.task_qa.parsing import parse_multiple_choice, parse_open_ended


@pytest.mark.parametrize(
    ("text", "answer", "solution"),
    [
        (
            "Question: Tom has 3 bags of 6 apples. How many apples?\n"
            "Solution: 3 * 6 = <<3*6=18>>18 apples.\n#### 18",
            "18",
            "3 * 6 = 18 apples.",
        ),
        (
            "Question: Tom has 3 bags of 6 apples. How many apples?\n"
            "Solution: 3 * 6 = 18, so he has 18 apples. #### 18\n",
            "18",
            "3 * 6 = 18, so he has 18 apples.",
        ),
        (
            "Question: Tom has 3 bags of 6 apples. How many apples?\n"
            "Solution: 3 * 6 = 18.\nFinal answer: ####18",
            "18",
            "3 * 6 = 18.\nFinal answer:",
        ),
    ],
)
def test_open_ended_final_answer_wherever_the_marker_stands(text, answer, solution):
    item = parse_open_ended(text)
    assert item.error == ""
    assert item.question == "Tom has 3 bags of 6 apples. How many apples?"
    assert (item.answer, item.solution) == (answer, solution)


def test_open_ended_without_a_final_answer_names_what_is_missing():
    assert parse_open_ended("Question: How many?\nSolution: many.").error == "missing final answer"
    assert parse_open_ended("just text").error == "missing question, final answer"
    assert parse_open_ended("Question: How many?\n####").error == "missing final answer"


def test_multiple_choice_answer_letter_becomes_the_option_text():
    text = "Question: Which is prime?\nA) 4\nB) 7\nC) 9\nAnswer: B\nA) trailing chatter"
    item = parse_multiple_choice(text)
    assert (item.question, item.choices, item.answer) == ("Which is prime?", ["4", "7", "9"], "7")
    assert parse_multiple_choice("Question: Which?\nA) 4\nB) 7\nAnswer: (A) 4").answer == "4"
    assert parse_multiple_choice("Question: Which?\nA) 4\nAnswer: A").error == "missing options"
