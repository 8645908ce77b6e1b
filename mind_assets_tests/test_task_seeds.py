"""Seed catalog, the eval-split guard, and normalisation through lm-eval's task objects."""

import json

import pytest

from mind_assets.cli import main as mind_cli
from mind_assets.decontamination.benchmarks import (
    BenchmarkError,
    read_benchmark_texts,
    resolve_benchmarks,
)
from mind_assets.decontamination.check import Decontamination
from mind_assets.decontamination.index import NgramIndex
from mind_assets.decontamination.record import IndexVersion
from mind_assets.settings import TaskQASettings
from mind_assets.task_qa.catalog import build_catalog, eligibility
from mind_assets.task_qa.families import require_own_benchmark
from mind_assets.task_qa.licences import LicenceFinder, card_licence
from mind_assets.task_qa.rules import Candidate, item_text, run_task_rules
from mind_assets.task_qa.seeds import (
    EvalSplitRefused,
    load_seed_split,
    normalize_split,
)
from mind_assets.task_qa.stage import judge_and_convert


@pytest.fixture(scope="module")
def catalog():
    return {e.task: e for e in build_catalog()}


def test_catalog_counts_eligible_and_refused_tasks(catalog, mirror, capsys, monkeypatch):
    eligible = [e for e in catalog.values() if e.eligible]
    eval_as_train = [
        e for e in catalog.values() if "training_split" in e.reason and "also" in e.reason
    ]
    assert len(catalog) == 13_123
    assert len(eligible) == 489
    assert len(eval_as_train) == 130
    monkeypatch.setenv("MIND_TASK_MIRROR_DIR", str(mirror))
    monkeypatch.setenv("MIND_TASK_QA__FAMILIES", json.dumps(["gsm8k", "commonsense_qa", "piqa"]))
    assert mind_cli(["tasks"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(
        f"13123 lm-eval subtasks: 489 eligible as seeds, {len(catalog) - 489} refused"
    )
    assert "   130  training_split" in printed
    # Each family's licence: commonsense_qa's from the card in the mirror, gsm8k's from the
    # table of cards read by hand, piqa's unknown (no card on disk, not in the table).
    lines = {
        line.split()[1]: line.split() for line in printed.splitlines() if line.startswith(" * ")
    }
    assert lines["commonsense_qa"][2:5] == ["multiple_choice", "choice", "mit"]
    assert lines["gsm8k"][2:5] == ["generate_until", "math", "mit"]
    assert lines["piqa"][4] == "unknown"
    assert str(mirror / "tau" / "commonsense_qa" / "README.md") in printed
    assert (
        "mind_assets/task_qa/licences.py (read from https://huggingface.co/datasets/openai/gsm8k)"
        in printed
    )


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


def decontamination_of(names: list[str], mirror) -> Decontamination:
    """The decontamination rule over the named lm-eval benchmarks, read from the mirror."""
    splits = resolve_benchmarks(names)
    texts = read_benchmark_texts(splits, mirror)
    per_benchmark: dict[str, list[str]] = {}
    for split in splits:
        per_benchmark.setdefault(split.benchmark, []).append(f"{split.dataset} {split.split}")
    index = NgramIndex(
        texts["benchmark"].to_pylist(), texts["item_id"].to_pylist(), texts["text"].to_pylist()
    )
    return Decontamination(IndexVersion.of({}, texts, per_benchmark), index)


def test_item_copied_from_gsm8k_test_is_removed_by_decontamination(catalog, mirror):
    decontamination = decontamination_of(["gsm8k"], mirror)
    assert decontamination.version.items == {"gsm8k": 1319}
    assert decontamination.version.splits == {"gsm8k": ["openai/gsm8k/main test"]}
    gsm8k = [json.loads(line) for line in (mirror / "openai/gsm8k/main/test.jsonl").open()]
    copied = gsm8k[7]["question"]
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
        items,
        seed_questions=[],
        thresholds=TaskQASettings(),
        contamination=decontamination.scan([item_text(c) for c in items]),
    )
    assert [r for r in reasons[0] if r.startswith("contaminated: gsm8k gsm8k:test:7: ")]
    assert not any(r.startswith("contaminated") for r in reasons[1])


def test_generative_tasks_are_checked_by_their_own_metric(catalog):
    check = {
        t: (catalog[t].answer_check, json.loads(catalog[t].metric_options))
        for t in (
            "gsm8k",
            "minerva_math_algebra",
            "triviaqa",
            "nq_open",
            "coqa",
            "wmt16-en-de",
            "arc_easy",
        )
    }
    assert check["gsm8k"] == ("math", {})
    assert check["minerva_math_algebra"][0] == "math"
    assert check["triviaqa"] == (
        "exact_match",
        {"ignore_case": True, "ignore_punctuation": True, "until": ["\n", ".", ","]},
    )
    assert check["nq_open"][1]["regexes_to_ignore"] == [r"\b(?:The |the |An |A |The |a |an )"]
    assert check["coqa"][0] == "exact_match" and check["coqa"][1]["ignore_punctuation"]
    assert check["wmt16-en-de"] == ("free_text", {})  # bleu/chrf/ter: no answer check
    assert check["arc_easy"] == ("choice", {})


def test_a_non_math_family_is_judged_by_its_metric_and_a_choice_family_gets_open_stems(catalog):
    trivia = judge_and_convert(
        catalog["triviaqa"],
        [
            Candidate(
                "open_ended", "Which river runs through Paris?", [], "the Seine", "", is_math=True
            )
        ],
    )[0]
    assert (trivia.is_math, trivia.metric) == (False, "exact_match")
    assert trivia.metric_options["until"] == ["\n", ".", ","]
    math = judge_and_convert(
        catalog["gsm8k"], [Candidate("open_ended", "2 + 2?", [], "4", "", is_math=True)]
    )[0]
    assert (math.is_math, math.metric) == (True, "")
    mc, open_form = judge_and_convert(
        catalog["commonsense_qa"],
        [
            Candidate(
                "multiple_choice",
                "Which of the following is used to cut paper?",
                ["scissors", "spoon"],
                "scissors",
                "",
            ),
            Candidate(
                "open_ended", "Which of the following is used to cut paper?", [], "scissors", ""
            ),
        ],
    )
    assert mc.question == "Which of the following is used to cut paper?"  # shown with options
    assert open_form.question == "What is used to cut paper?"
    assert open_form.conversion == "'which of the following' -> 'what'"


def test_a_family_is_checked_against_its_own_split_and_an_unreadable_one_fails_by_name(
    catalog, mirror, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # commonsense_qa has no test split: lm-eval scores it on validation, which is what is read.
    decontamination = decontamination_of(["commonsense_qa", "gsm8k"], mirror)
    assert decontamination.version.items == {"commonsense_qa": 2, "gsm8k": 1319}
    require_own_benchmark(catalog["commonsense_qa"], decontamination)
    require_own_benchmark(catalog["gsm8k"], decontamination)
    # A family whose own evaluation split the index lacks is refused, not left unchecked.
    with pytest.raises(ValueError, match=r"arc_easy.*ARC-Easy 'test'.*MIND_DECONTAMINATION"):
        require_own_benchmark(catalog["arc_easy"], decontamination)
    # The mirror holds no ARC test split and the hub is off: the benchmark fails by name.
    with pytest.raises(BenchmarkError, match=r"benchmark 'arc_easy' \(arc_easy: allenai/ai2_arc"):
        read_benchmark_texts(resolve_benchmarks(["arc_easy"]), mirror)


def test_licence_is_read_from_a_card_in_the_hub_cache_before_the_table(tmp_path):
    snapshot = tmp_path / "hub" / "datasets--openai--gsm8k" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a card\n")
    from_cache = LicenceFinder(hub_cache=tmp_path / "hub").find("openai/gsm8k")
    assert from_cache.licence == "apache-2.0" and from_cache.source == str(snapshot / "README.md")
    from_table = LicenceFinder(hub_cache=tmp_path / "empty").find("openai/gsm8k")
    assert (
        from_table.licence == "mit" and "huggingface.co/datasets/openai/gsm8k" in from_table.source
    )
    assert LicenceFinder(hub_cache=tmp_path).find("someone/unknown_set").licence == "unknown"
    assert card_licence("---\nlicense:\n- cc-by-4.0\n- mit\n---\n") == "cc-by-4.0, mit"
    assert card_licence("no header here") is None
