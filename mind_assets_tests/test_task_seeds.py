"""Seed catalog, the eval-split guard, and normalisation through lm-eval's task objects."""

import pytest

from mind_assets.cli import main as mind_cli
from mind_assets.settings import TaskQASettings
from mind_assets.task_qa.catalog import build_catalog, eligibility
from mind_assets.task_qa.rules import Candidate, run_task_rules
from mind_assets.task_qa.seeds import (
    EvalSplitRefused,
    load_eval_texts,
    load_seed_split,
    normalize_split,
)


@pytest.fixture(scope="module")
def catalog():
    return {e.task: e for e in build_catalog()}


def test_catalog_counts_eligible_and_refused_tasks(catalog, capsys):
    eligible = [e for e in catalog.values() if e.eligible]
    eval_as_train = [
        e for e in catalog.values() if "training_split" in e.reason and "also" in e.reason
    ]
    assert len(catalog) == 13_123
    assert len(eligible) == 489
    assert len(eval_as_train) == 130
    assert mind_cli(["tasks"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(
        f"13123 lm-eval subtasks: 489 eligible as seeds, {len(catalog) - 489} refused"
    )
    assert "   130  training_split" in printed


def test_eligibility_rule():
    assert eligibility({"training_split": "train", "test_split": "test"}) == (True, "")
    assert not eligibility({"training_split": "train", "test_split": "train"})[0]
    assert not eligibility({"training_split": "train", "validation_split": "train"})[0]
    assert not eligibility({"test_split": "test"})[0]


@pytest.mark.parametrize(
    ("task", "split"), [("gsm8k", "test"), ("arc_easy", "validation"), ("arc_easy", "test")]
)
def test_test_split_is_refused_as_seed_even_when_asked_directly(catalog, mirror, task, split):
    with pytest.raises(EvalSplitRefused, match=f"refusing to load split '{split}'"):
        load_seed_split(catalog[task], split, mirror)


def test_task_whose_training_split_is_its_eval_split_is_refused(catalog, mirror):
    refused = next(e for e in catalog.values() if "also its test_split" in e.reason)
    with pytest.raises(EvalSplitRefused, match="refusing to load split 'train'"):
        load_seed_split(refused, refused.training_split, mirror)


def test_gsm8k_seeds_come_from_the_real_training_split(catalog, mirror):
    table = normalize_split(
        catalog["gsm8k"], load_seed_split(catalog["gsm8k"], "train", mirror), limit=20
    )
    rows = table.to_pylist()
    assert len(rows) == 20 and rows[0]["question"].startswith("Natalia sold clips")
    assert rows[0]["answer"] == "72" and "<<" not in rows[0]["rationale"]
    assert all(r["output_type"] == "generation" and r["source_split"] == "train" for r in rows)


def test_letter_only_tasks_produce_answer_texts(catalog, mirror):
    entry = catalog["commonsense_qa"]
    rows = normalize_split(entry, load_seed_split(entry, "train", mirror)).to_pylist()
    first = rows[0]
    assert first["choices"] == ["cupboard", "refrigerator", "backpack", "garden", "bookshelf"]
    assert first["answer"] == "refrigerator"
    assert all(r["answer"] in r["choices"] and len(r["answer"]) > 1 for r in rows)


def test_winogrande_inverted_fields_become_sentence_options_and_answer(catalog, mirror):
    entry = catalog["winogrande"]
    rows = normalize_split(entry, load_seed_split(entry, "train", mirror)).to_pylist()
    assert rows[0]["question"].startswith("The cup did not fit")
    assert rows[0]["choices"] == ["cup", "bag"] and rows[0]["answer"] == "cup"
    assert rows[1]["answer"] == "Sophie"


def test_item_copied_from_gsm8k_test_is_removed_by_decontamination(catalog, mirror):
    eval_texts = load_eval_texts(catalog["gsm8k"], mirror)
    assert len(eval_texts) == 1319
    copied = eval_texts[7].split("####")[0]
    fresh = (
        "A farmer has 12 hens that each lay 3 eggs a day. How many eggs does he collect in a week?"
    )
    items = [
        Candidate(
            "open_ended", copied, [], "18", "Step by step the answer is 18", solution="So 18"
        ),
        Candidate(
            "open_ended",
            fresh,
            [],
            "252",
            "12 * 3 = 36 per day, 36 * 7 = 252",
            solution="36 * 7 = 252",
        ),
    ]
    reasons = run_task_rules(
        items, seed_questions=[], eval_texts=eval_texts, thresholds=TaskQASettings()
    )
    assert "contaminated" in reasons[0]
    assert "contaminated" not in reasons[1]
