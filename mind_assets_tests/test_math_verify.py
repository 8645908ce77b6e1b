"""Answer extraction and comparison on the formats that trip verifiers up."""

from __future__ import annotations

import pytest

from mind_assets.math_traces.verify import (
    extract_answer,
    judge,
    last_boxed,
    majority,
    normalize_answer,
    reference_answer,
)


@pytest.mark.parametrize(
    ("trace", "reference", "correct"),
    [
        # fractions
        (r"So the share is \boxed{\frac{3}{4}}.", "0.75", True),
        (r"The answer is \boxed{\dfrac{1}{2}}", "1/2", True),
        ("The answer is 3/4.", "0.75", True),
        (r"\boxed{\frac{2}{3}}", "0.6", False),
        # units and currency
        ("The answer is $18.", "18", True),
        (r"The answer is \boxed{12 \text{ cm}}", "12", True),
        ("#### 5 dollars", "5", True),
        ("The answer is 40%.", "40", True),
        ("The final answer is: 7 apples", "7", True),
        # commas in numbers
        ("The answer is 1,250.", "1250", True),
        (r"\boxed{1{,}000{,}000}", "1000000", True),
        ("The answer is $12,345.50", "12345.5", True),
        ("The answer is 1,250.", "125", False),
        # nested boxes and braces
        (r"\boxed{\boxed{42}}", "42", True),
        (r"First \boxed{3}, corrected: \boxed{4}", "4", True),
        (r"\boxed{2^{10}}", "1024", True),
        # negative numbers
        ("The answer is -5.", "-5", True),
        ("The answer is \u22127", "-7", True),
        (r"\boxed{-3.0}", "-3", True),
        ("The answer is 5.", "-5", False),
        # decimals equal to integers
        ("#### 18.00", "18", True),
        # the marker wherever it stands in the last lines
        ("She earns 9 * 2 = 18 dollars a day. #### 18", "18", True),
        ("Total: 6 + 12 = 18.\nSo she makes 18 dollars.  ####18\n", "18", True),
        ("Final answer: #### 1,600", "1600", True),
        ("So the answer is 18 dollars.\nI hope this helps!", "18", True),
        ("Putting it together, the answer is 18. Check: 9 * 2 = 18.", "18", True),
        (r"so $x = \boxed{\frac{\sqrt{3}}{2}}$ and we are done.\nThanks!", r"\sqrt{3}/2", True),
        # no answer marker: incorrect, not guessed from the last number
        ("We get 42 in the end", "42", False),
        # cut off inside the box
        (r"The answer is \boxed{4", "4", False),
    ],
)
def test_tricky_formats(trace, reference, correct):
    assert judge(trace, reference).correct is correct, judge(trace, reference)


def test_extraction_prefers_boxed_then_hashes_then_the_answer_is():
    assert extract_answer("The answer is 3. \\boxed{4}") == ("4", "boxed")
    assert extract_answer("The answer is 3\n#### 5") == ("5", "hashes")
    assert extract_answer("so the answer is 3.") == ("3", "answer_is")
    assert extract_answer("nothing here") == (None, "none")


def test_last_boxed_matches_nested_braces():
    assert last_boxed(r"x \boxed{\frac{a}{b^{2}}} y") == r"\frac{a}{b^{2}}"
    assert last_boxed(r"\fbox{7}") == "7"


def test_gsm8k_reference_is_the_number_after_the_hashes():
    assert reference_answer("She pays 2*3=<<2*3=6>>6.\n#### 1,600") == "1600"
    assert reference_answer("She pays 2*3=<<2*3=6>>6. #### 6") == "6"
    assert reference_answer("#### 5\nchecked again: #### 6") == "6"
    with pytest.raises(ValueError, match="####"):
        reference_answer("no final line")


def test_normalize_answer():
    assert normalize_answer("$1,000.") == "1000"
    assert normalize_answer("\\$5") == "5"
    assert normalize_answer("\u22123") == "-3"


def test_majority_vote_ties_go_to_the_first_seen():
    assert majority(["4", None, "5", "4"]) == "4"
    assert majority(["5", "4"]) == "5"
    assert majority([None, None]) is None


def test_answers_compare_in_a_worker_thread_where_math_verifys_alarm_cannot_be_set():
    """Math-Verify's own timeout (signal.alarm) raises outside the main thread; the platform's
    comparison and the task rules run there too (threaded executors, merged test runs)."""
    from concurrent.futures import ThreadPoolExecutor

    from math_verify import parse

    from mind_assets.task_qa.majority import same_answer

    with ThreadPoolExecutor(1) as worker:
        with pytest.raises(ValueError, match="threaded environment"):
            worker.submit(parse, "$3/4$").result()
        assert worker.submit(judge, r"\boxed{\frac{3}{4}}", "0.75").result().correct
        assert worker.submit(same_answer, "1,000", "1000").result()
