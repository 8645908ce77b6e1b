"""Prismatic rounds with fake features, generation and solutions: one featurisation for seeds and
items, the pool growing round by round, majority-answer verification, and G-Vendi per round."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mind_assets.task_qa.majority import MajorityVerdict, final_answer, majority_verdict
from mind_assets.task_qa.outputs import PRISMATIC_TASK_QA
from mind_assets.task_qa.prismatic import pool_sample, run_prismatic_rounds

# --- majority answer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("solution", "answer"),
    [
        ("3 + 4 = 7 apples.\n#### 7", "7"),
        ("so the total is \\boxed{12}.", "12"),
        ("He pays 5 * 3 = 15.\nAnswer: $15", "$15"),
        ("Tom has 2 and gets 1,200 more", "1200"),
        ("I cannot tell.", ""),
    ],
)
def test_final_answer_reads_the_last_stated_answer(solution, answer):
    assert final_answer(solution) == answer


def test_majority_agreeing_with_the_stated_answer_keeps_the_item():
    verdict = majority_verdict("15", ["#### 15", "#### 15.0", "#### $15", "#### 12", "no idea"])
    assert verdict.agrees and verdict.votes == 3 and verdict.samples == 5
    assert verdict.reason == "majority agrees 3/5"


def test_a_majority_for_another_answer_rejects_the_item():
    verdict = majority_verdict("15", ["#### 12", "#### 12", "#### 15"])
    assert not verdict.agrees and verdict.majority_answer == "12"
    assert verdict.reason.startswith("majority_disagrees: 2/3 say '12'")


def test_a_plurality_is_not_a_majority():
    verdict = majority_verdict("15", ["#### 15", "#### 15", "#### 12", "#### 9"])
    assert not verdict.agrees and verdict.majority_answer is None
    assert verdict.reason.startswith("no_majority")


# --- one featurisation ----------------------------------------------------------------------------


def test_seeds_and_items_are_featurised_the_same_way():
    seed = {
        "seed_id": "s1",
        "question": "2 + 2?",
        "choices": None,
        "answer": "4",
        "rationale": "2+2",
    }
    item = {"qa_id": "q1:open_ended", "question": "2 + 2?", "choices": None, "answer": "4"}
    item["reasoning"] = "2+2"
    a, b = pool_sample(seed), pool_sample(item)
    assert (
        (a.prompt, a.completion)
        == (b.prompt, b.completion)
        == ("Question: 2 + 2?", "2+2\nAnswer: 4")
    )
    assert (a.row_id, b.row_id) == ("seed:s1", "qa:q1:open_ended")
    mc = pool_sample({**item, "choices": ["3", "4"]})
    assert mc.prompt == "Question: 2 + 2?\nA) 3\nB) 4"


# --- rounds ---------------------------------------------------------------------------------------

DIM = 8


def direction(text: str) -> np.ndarray:
    """Fake features: the region is the number after 'region ' in the question."""
    region = int(text.split("region ")[1].split()[0])
    vector = np.full(DIM, 0.01)
    vector[region] = 1.0
    return vector


def seed_row(i: int, region: int) -> dict:
    return {
        "seed_id": f"s{i}",
        "question": f"In region {region} seed {i}?",
        "choices": None,
        "answer": str(i),
        "rationale": "because",
    }


def item_rows(item_id: str, region: int, answer: str = "7") -> list[dict]:
    base = {
        "item_id": item_id,
        "task": "t",
        "family": "t",
        "question": f"In region {region} item {item_id}?",
        "answer": answer,
        "reasoning": "worked",
        "seed_ids": ["s0"],
    }
    return [
        {
            **base,
            "qa_id": f"{item_id}:multiple_choice",
            "form": "multiple_choice",
            "choices": ["7", "8"],
        },
        {**base, "qa_id": f"{item_id}:open_ended", "form": "open_ended", "choices": None},
    ]


def run_rounds(rounds: int, verify=None, generated=None):
    # The pool: 9 seeds in region 0, 1 in region 1. With k = 2 clusters, region 1 is the small one.
    seeds = [seed_row(i, 0) for i in range(9)] + [seed_row(9, 1)]
    first = item_rows("a", 0) + item_rows("b", 1) + item_rows("c", 1, answer="9")
    calls = {"featurised": [], "generated": []}

    def featurise(samples):
        calls["featurised"].append(len(samples))
        return np.stack([direction(s.prompt) for s in samples])

    def generate(round_, pool_rows, picker):
        chosen, _, _ = picker(123, pool_rows, 2)
        calls["generated"].append((round_, len(pool_rows), [r["seed_id"] for r in chosen]))
        return (generated or {}).get(round_, ([], []))

    result = run_prismatic_rounds(
        seeds=seeds,
        first_items=first,
        rounds=rounds,
        native_form="open_ended",
        featurise=featurise,
        generate=generate,
        verify=verify,
        cluster_fraction=0.2,
        keep_fraction=0.5,
        generation_fraction=0.5,
        seed=0,
    )
    return result, calls


def test_round_one_filters_task_items_and_kept_items_join_the_pool():
    result, calls = run_rounds(1)
    kept_items = {r["item_id"] for r in result.kept}
    assert kept_items == {"b", "c"}, "region 1 is under-represented; region 0 is not"
    assert {r["form"] for r in result.kept} == {"multiple_choice", "open_ended"}
    assert all(
        r["prismatic_round"] == 1 and r["prismatic_cluster"] is not None for r in result.kept
    )
    dropped = [r for r in result.dropped if r["item_id"] == "a"]
    assert len(dropped) == 2 and dropped[0]["rejected_by"] == ["prismatic_over_represented"]
    seeds_round, first = result.rounds
    assert (seeds_round.round, seeds_round.pool_after) == (0, 10)
    assert (first.pool, first.clusters, first.new_items, first.kept, first.pool_after) == (
        10,
        2,
        3,
        2,
        12,
    )
    assert seeds_round.g_vendi_pool >= 1.0 and first.g_vendi_kept >= 1.0
    assert calls["generated"] == [], "round 1 reuses task_qa's items"


def test_later_rounds_generate_from_the_grown_pool():
    new = item_rows("d", 1)
    rejected = [{**item_rows("e", 1)[1], "rejected_by": ["parse_failure"]}]
    result, calls = run_rounds(2, generated={2: (new, rejected)})
    ((round_, pool_size, shown),) = calls["generated"]
    assert (round_, pool_size) == (2, 12), "the pool is the seeds plus round 1's kept items"
    assert any(s.startswith("b:") or s.startswith("c:") or s == "s9" for s in shown)
    assert [r.round for r in result.rounds] == [0, 1, 2]
    second = result.rounds[2]
    assert second.pool == 12 and second.new_items == 1
    assert second.pool_after == second.pool + second.kept
    assert all(r.g_vendi_pool > 0 for r in result.rounds)
    parse_failed = [r for r in result.dropped if r["item_id"] == "e"]
    assert parse_failed[0]["rejected_by"] == ["parse_failure"]
    assert parse_failed[0]["prismatic_round"] == 2 and parse_failed[0]["prismatic_cluster"] is None
    # One feature call per round plus the seeds; each call covers every sample so far (cached).
    assert calls["featurised"] == [10, 13, 14]


def test_math_items_the_filter_keeps_must_pass_the_majority_check():
    checked = []

    def verify(round_, items):
        checked.extend(i.item_id for i in items)
        return {
            i.item_id: MajorityVerdict(
                i.answer == "7",
                "7",
                3,
                5,
                "majority agrees 3/5" if i.answer == "7" else "majority_disagrees: 3/5 say '7'",
            )
            for i in items
        }

    result, _ = run_rounds(1, verify=verify)
    assert sorted(checked) == ["b", "c"], "only items the filter kept are solved"
    assert {r["item_id"] for r in result.kept} == {"b"}
    assert all(r["majority_votes"] == 3 and r["majority_samples"] == 5 for r in result.kept)
    wrong = [r for r in result.dropped if r["item_id"] == "c"]
    assert wrong and wrong[0]["rejected_by"] == ["majority_disagrees"]
    assert "majority_disagrees" in wrong[0]["prismatic_reason"]
    assert result.rounds[1].verified == 2 and result.rounds[1].kept == 1


def test_a_generated_rounds_items_pass_the_same_majority_check():
    checked = []

    def verify(round_, items):
        checked.extend((round_, i.item_id) for i in items)
        return {
            i.item_id: MajorityVerdict(i.item_id != "e", "7", 2, 3, f"verdict on {i.item_id}")
            for i in items
        }

    generated = item_rows("d", 1) + item_rows("e", 1)
    result, _ = run_rounds(2, verify=verify, generated={2: (generated, [])})
    later = [item for round_, item in checked if round_ == 2]
    assert later, "round 2's new items were solved"
    assert set(later) <= {"d", "e"}
    for row in result.kept + result.dropped:
        if row["prismatic_round"] == 2 and row["item_id"] in later:
            assert row["majority_samples"] == 3
            assert (row in result.kept) == (row["item_id"] == "d")
    assert result.rounds[2].verified == len(later)


def test_prismatic_columns_are_in_the_declared_schema():
    names = set(PRISMATIC_TASK_QA.schema.names)
    assert {"prismatic_round", "prismatic_cluster", "majority_answer", "majority_votes"} <= names
    assert isinstance(PRISMATIC_TASK_QA.schema.field("prismatic_round").type, pa.DataType)


def test_an_empty_seed_pool_is_refused():
    with pytest.raises(ValueError, match="at least one seed"):
        run_prismatic_rounds(
            seeds=[],
            first_items=[],
            rounds=1,
            native_form="open_ended",
            featurise=lambda s: np.zeros((len(s), DIM)),
            generate=lambda *a: ([], []),
            verify=None,
            cluster_fraction=0.1,
            keep_fraction=0.5,
            generation_fraction=0.1,
            seed=0,
        )
