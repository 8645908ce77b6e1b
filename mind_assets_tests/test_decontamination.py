"""Benchmark decontamination without the engine: the normal form, the n-gram thresholds with
known answers, the index's evidence on rows and partitions, resolving and reading benchmarks
(failing by name), the rule in the filtering stage, and the blend's requirement."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mind_assets.blends.manifest import (
    Manifest,
    ResolvedFile,
    ResolvedPhase,
    ResolvedSource,
    manifest_table,
    unchecked_reasons,
)
from mind_assets.conversations.schema import CONVERSATION_SCHEMA
from mind_assets.decontamination.benchmarks import (
    BenchmarkError,
    read_benchmark_texts,
    resolve_benchmarks,
)
from mind_assets.decontamination.check import (
    CONTAMINATION_FIELD,
    Decontamination,
    decontaminate_split,
    quarantine_contaminated,
)
from mind_assets.decontamination.index import BOILERPLATE_ITEMS, NgramIndex
from mind_assets.decontamination.judge import excerpt, parse_verdict
from mind_assets.decontamination.normalise import normalise, words
from mind_assets.decontamination.record import (
    CheckRecord,
    IndexVersion,
    read_record,
    with_record,
)
from mind_assets.decontamination.steps import BenchmarkIndexError, current_index
from mind_assets.filtering.partition import filter_partition
from mind_assets.lib.datasets import DatasetSplitError
from mind_assets.lib.quarantine import write_split
from mind_assets.lib.storage import read_output, read_output_schema
from mind_assets.settings import BenchmarkSpec, DecontaminationSettings, FilterThresholds
from mind_assets.task_qa.outputs import TASK_QA

# A GSM8K-style problem whose numbers come at most 12 words apart: no 13 words in a row survive
# a change of every number.
DENSE = (
    "A shop sells 12 pencils for 3 dollars and 8 erasers for 5 dollars each. Tom buys 4 "
    "pencils and 6 erasers and pays with a 20 dollar bill. How much change does he get "
    "after 2 days?"
)
DENSE_RENUMBERED = (
    "A shop sells 15 pencils for 4 dollars and 9 erasers for 6 dollars each. Tom buys 2 "
    "pencils and 7 erasers and pays with a 50 dollar bill. How much change does he get "
    "after 3 days?"
)
NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)
SHORT = "What is the degree of the field extension Q(sqrt 2)?"  # 11 words


def index_of(texts: dict[str, list[str]], **options) -> NgramIndex:
    """Item i of a benchmark is `<benchmark>:test:<i>`."""
    names = [name for name, items in texts.items() for _ in items]
    ids = [f"{name}:test:{i}" for name, items in texts.items() for i in range(len(items))]
    return NgramIndex(names, ids, [t for items in texts.values() for t in items], **options)


def decontamination_of(texts: dict[str, list[str]], **options) -> Decontamination:
    version = IndexVersion("v1", dict.fromkeys(texts, "fp"), {})
    return Decontamination(version, index_of(texts, **options))


# --- the normal form ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Natalia sold $48$ clips", "natalia   SOLD 48\nclips"),
        (r"she paid \$48,000 for it", "she paid 48000 for it"),
        ("48{,}000 and 48\\,000 and 1,234,567", "48000 and 48000 and 1234567"),
        ("it costs 3.50 or 2.0", "it costs 3.5 or 2"),
        (r"\dfrac{1}{2} of \tfrac 3 4", "1/2 of 3/4"),
        (r"$a\;+\;b \left( x \right)\quad$", "a + b (x)"),
        (r"\text{cm} and \mathrm{kg}", "cm and kg"),
        ("She makes 9 * 2 = $<<9*2=18>>18 a day", "She makes 9 * 2 = $18 a day"),
        ("Janet’s ducks", "Janet's ducks"),
    ],
)
def test_the_normal_form_makes_formatting_differences_equal(one, other):
    assert normalise(one) == normalise(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("sold 48 clips", "sold 52 clips"),
        ("three apples", "3 apples"),
        (r"\sqrt{2}", "2"),
        ("1,2,3", "123"),
    ],
)
def test_the_normal_form_keeps_numbers_and_words_apart(one, other):
    assert normalise(one) != normalise(other)


def test_words_of_an_empty_text_are_none():
    assert words("") == [] and words("  $ \\quad $ ") == []


# --- thresholds, with known answers ---------------------------------------------------------
def test_a_verbatim_13_word_run_is_flagged_and_12_words_are_not():
    index = index_of({"gsm8k": [NATALIA]})
    run = NATALIA.split()
    page = "Some text before it. " + " ".join(run[3:16]) + " and some text after."
    shorter = "Some text before it. " + " ".join(run[3:15]) + " and some text after."
    found, missed = index.scan([page, shorter])
    [match] = found.matches
    assert (match.benchmark, match.item_id, match.shared_ngrams) == ("gsm8k", "gsm8k:test:0", 1)
    assert match.span == normalise(" ".join(run[3:16]))
    assert missed.matches == []


def longest_run_without_a_number(text: str) -> int:
    longest = run = 0
    for word in words(text):
        run = 0 if word.isdigit() else run + 1
        longest = max(longest, run)
    return longest


def test_a_near_duplicate_with_changed_numbers_is_not_flagged_at_the_default_n():
    assert longest_run_without_a_number(DENSE) == 9  # the known answer: below 13
    index = index_of({"gsm8k": [DENSE]}, near_misses=True)
    verbatim, renumbered = index.scan([DENSE, DENSE_RENUMBERED])
    assert verbatim.matches and verbatim.matches[0].shared_ngrams == len(words(DENSE)) - 12
    assert renumbered.matches == []
    # It shares 8-word runs, so it is a near miss (what the paraphrase judge is asked about) ...
    assert renumbered.near_miss is not None and renumbered.near_miss.ngram == 8
    # ... and a smaller n would flag it: the threshold decides, not the normal form.
    assert index_of({"gsm8k": [DENSE]}, ngram=9, short_ngram=5).scan([DENSE_RENUMBERED])[0].matches


def test_re_spaced_latex_and_a_problem_inside_a_longer_page_are_flagged():
    index = index_of({"gsm8k": [NATALIA]})
    respaced = (
        r"Natalia  sold clips to $ 48 $ of her friends in April , and then she sold half "
        r"as many clips in May.\quad How many clips did Natalia sell altogether in April and May?"
    )
    page = "Chapter 3. Group actions.\n\n" * 40 + NATALIA + "\n\nExercises follow." * 40
    assert all(scan.matches for scan in index.scan([respaced, page]))


def test_a_short_question_is_indexed_at_the_short_n_and_a_tiny_text_not_at_all():
    index = index_of({"mmlu": [SHORT, "Level 5"]})
    assert index.stats.indexed == 1 and index.stats.too_short == 1
    quoted = "In lecture 4 we asked: what is the degree of the field extension, and answered it."
    other = "The degree of a polynomial is its largest exponent."
    found, clean = index.scan([quoted, other])
    assert found.matches[0].ngram == 8 and clean.matches == []


def test_min_shared_ngrams_raises_the_bar():
    run = NATALIA.split()
    one_gram = " ".join(run[:13])
    many = NATALIA
    assert index_of({"g": [NATALIA]}).scan([one_gram])[0].matches
    strict = Decontamination(IndexVersion("v", {"g": "f"}, {}), index_of({"g": [NATALIA]}), 5)
    assert strict.scan([one_gram, many]) == [[], strict.scan([many])[0]]
    assert strict.scan([many])[0]


def test_an_ngram_shared_by_many_items_is_boilerplate_and_flags_nothing():
    stem = "which of the following statements about the numbers shown in the table below is true"
    items = [f"{stem} {i} and {i + 1}" for i in range(BOILERPLATE_ITEMS + 1)]
    index = index_of({"mmlu": items})
    assert index.stats.boilerplate >= 1
    assert index.scan([f"Quiz: {stem}?"])[0].matches == []


def test_rows_are_matched_to_every_benchmark_and_the_best_item_first():
    index = index_of({"gsm8k": [NATALIA], "math": [DENSE]})
    [scan] = index.scan([NATALIA + " Also: " + DENSE])
    assert {m.benchmark for m in scan.matches} == {"gsm8k", "math"}
    assert scan.matches[0].shared_ngrams >= scan.matches[1].shared_ngrams


def test_a_conversation_is_flagged_through_its_source_chunk_when_its_own_text_is_clean():
    decontamination = decontamination_of({"gsm8k": [NATALIA]})
    found = decontamination.scan(
        ["Student A: let us count clips. Student B: sure!", "Nothing here."],
        [f"Exercise. {NATALIA}", "A clean chunk about groups."],
        source_label="source chunk",
    )
    assert [m.where for m in found[0]] == ["source chunk"]
    assert found[0][0].reason().startswith("contaminated: gsm8k gsm8k:test:0 (source chunk): ")
    assert found[1] == []


def test_the_paraphrase_judge_is_asked_about_near_misses_only_and_its_yes_quarantines():
    decontamination = decontamination_of({"gsm8k": [DENSE]}, near_misses=True)
    asked = []

    def judge(cases):
        asked.extend(cases)
        return [True] * len(cases)

    decontamination.judge = judge
    decontamination.item_texts = {("gsm8k", "gsm8k:test:0"): DENSE}
    found = decontamination.scan([DENSE, DENSE_RENUMBERED, "unrelated text entirely"])
    assert [text for text, _, _ in asked] == [DENSE_RENUMBERED]
    assert found[0][0].where == "text" and found[1][0].where == "paraphrase, judged"
    assert found[2] == [] and decontamination.judged == 1
    assert parse_verdict("Yes.") is True and parse_verdict("no") is False
    assert parse_verdict("maybe") is None
    long_text = "x " * 5000 + "Tom buys 2 pencils" + " y" * 5000
    assert "Tom buys 2 pencils" in excerpt(long_text, "tom buys 2 pencils and 7")


# --- evidence on rows and partitions --------------------------------------------------------
def test_contaminated_rows_move_to_the_quarantine_with_benchmark_item_and_span(settings):
    decontamination = decontamination_of({"gsm8k": [NATALIA]})
    schema = TASK_QA.quarantine_schema
    accepted = pa.table({"qa_id": ["a", "b"], "text": [NATALIA, "clean"]})
    quarantine = pa.table(
        {"qa_id": ["c"], "text": [NATALIA], "rejected_by": [["duplicate"]]}
    ).append_column(CONTAMINATION_FIELD, pa.nulls(1, CONTAMINATION_FIELD.type))
    found = decontamination.scan(accepted["text"].to_pylist())
    held = decontamination.scan(quarantine["text"].to_pylist())
    columns = ["qa_id", "text", "rejected_by", "contamination"]
    small_schema = pa.schema([schema.field(name) for name in columns])
    kept, out = quarantine_contaminated(accepted, quarantine, found, held, small_schema)
    assert kept["qa_id"].to_pylist() == ["b"]
    rows = {r["qa_id"]: r for r in out.to_pylist()}
    assert rows["a"]["rejected_by"][0].startswith('contaminated: gsm8k gsm8k:test:0: "natalia')
    assert rows["c"]["rejected_by"][0] == "duplicate"
    assert rows["c"]["rejected_by"][1].startswith("contaminated: gsm8k")
    [match] = rows["a"]["contamination"]
    assert (match["benchmark"], match["item_id"], match["where"]) == (
        "gsm8k",
        "gsm8k:test:0",
        "text",
    )
    assert match["span"].startswith("natalia sold clips to 48 of her friends")


def test_a_written_partition_carries_its_record_through_the_quarantine_writer(settings):
    decontamination = decontamination_of({"gsm8k": [NATALIA]})
    schema = TASK_QA.schema
    rows = [{name: None for name in schema.names} for _ in range(2)]
    for i, row in enumerate(rows):
        row.update(
            qa_id=f"q{i}", item_id=f"i{i}", task="t", family="f", form="open_ended",
            seed_ids=[], prompt_id="p", prompt_version="v", model="m", engine="e",
            engine_version="1", engine_dtype="float32", sampling_params="{}", seed=0,
            prompt_tokens=1, completion_tokens=1, finish_reason="stop", request_hash="h",
            raw_output="r", text=[NATALIA, "A clean item about apples."][i],
            created_at=datetime.now(UTC),
        )  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=schema)
    checked = decontaminate_split(
        decontamination, table, TASK_QA.quarantine_schema.empty_table(), TASK_QA.quarantine_schema
    )
    written = write_split(
        TASK_QA, settings.data_dir, {"family": "f"}, checked.accepted, checked.quarantine
    )
    record = read_record(read_output_schema(written.accepted_path))
    assert record == CheckRecord("v1", {"gsm8k": "fp"}, checked=2, removed={"gsm8k": 1})
    assert read_output(written.quarantine_path)["qa_id"].to_pylist() == ["q0"]
    assert read_record(read_output_schema(written.quarantine_path)) is None


def test_a_blend_refuses_files_never_checked_against_its_benchmarks():
    required = IndexVersion("v2", {"gsm8k": "aaa", "math": "bbb"}, {})
    checked = CheckRecord("v2", {"gsm8k": "aaa", "math": "bbb", "arc": "ccc"}, 3, {})
    older = CheckRecord("v1", {"gsm8k": "aaa", "math": "old"}, 3, {})
    assert unchecked_reasons(checked, required) == []  # a superset is fine
    assert unchecked_reasons(older, required) == [
        "decontamination: checked against another math index (old, now bbb)"
    ]
    assert unchecked_reasons(None, required) == [
        "decontamination: never checked against gsm8k",
        "decontamination: never checked against math",
    ]
    assert unchecked_reasons(None, IndexVersion.off({})) == []  # decontamination off
    assert with_record(pa.table({"a": [1]}), checked).schema.metadata is not None


def test_the_manifest_twin_holds_records_with_and_without_benchmarks(tmp_path):
    """A record checked against no benchmark (decontamination off) has an empty map, which
    Parquet cannot hold as a struct: the twin keeps each record as JSON."""
    records = [
        CheckRecord("off", {}, 3, {}).to_json(),
        None,
        CheckRecord("v", {"gsm8k": "a"}, 2, {"gsm8k": 1}).to_json(),
    ]
    files = [
        ResolvedFile("raw_documents", f"s{n}", f"f{n}", "x", 1, 1, decontamination=r)
        for n, r in enumerate(records)
    ]
    source = ResolvedSource("raw", "raw_documents", "low", 1.0, 1.0, files, [], tokens=3)
    manifest = Manifest("b", "b.yaml", "x", 3, 0, "t", "now", [ResolvedPhase("p", 3, [source])])
    pq.write_table(manifest_table(manifest), tmp_path / "manifest.parquet")
    twin = pq.read_table(tmp_path / "manifest.parquet")["decontamination"].to_pylist()
    assert [None if t is None else json.loads(t) for t in twin] == records


def test_the_filter_stage_quarantines_a_conversation_whose_chunk_holds_a_benchmark_item():
    rows = []
    for i, chunk in enumerate(["c-dirty", "c-clean"]):
        row = {name: None for name in CONVERSATION_SCHEMA.names}
        row.update(
            conversation_id=f"conv{i}", chunk_id=chunk, style="two_students", n_turns=4,
            text="Student A: What do we count?\nStudent B: The clips she sold.\n" * 6,
            turns=[{"speaker": f"Student {s}", "text": "Clips."} for s in "ABAB"],
            completion_tokens=120, finish_reason="stop",
        )  # fmt: skip
        rows.append(row)
    generated = pa.Table.from_pylist(rows, schema=CONVERSATION_SCHEMA)
    chunks = {"c-dirty": f"Worked example. {NATALIA}", "c-clean": "Groups act on sets."}
    decontamination = decontamination_of({"gsm8k": [NATALIA]})
    partition = filter_partition(
        generated,
        chunks,
        FilterThresholds(profile="paper", min_source_length_ratio=0),
        {"two_students": ""},
        shard="s",
        style="two_students",
        decontamination=decontamination,
    )
    assert partition.accepted["conversation_id"].to_pylist() == ["conv1"]
    [held] = partition.quarantine.to_pylist()
    assert held["conversation_id"] == "conv0"
    assert held["rejected_by"] == [
        f'contaminated: gsm8k gsm8k:test:0 (source chunk): "{normalise(NATALIA)}"'
    ]
    assert held["contamination"][0]["where"] == "source chunk"
    assert partition.rejections_per_rule["contaminated"] == 1
    assert json.loads(held["rule_values"])["contaminated"] > 0
    assert partition.decontamination.removed == {"gsm8k": 1}
    assert read_record(partition.accepted.schema).checked == 2


# --- resolving and reading benchmarks, failing by name -------------------------------------
TASKS = {
    "gsm8k": {"dataset_path": "openai/gsm8k", "dataset_name": "main", "test_split": "test"},
    "csqa": {"dataset_path": "tau/commonsense_qa", "validation_split": "validation"},
    "math_group": {"task": ["algebra", {"task": "geometry_group"}]},
    "geometry_group": {"task": ["geometry"]},
    "algebra": {"dataset_path": "m", "dataset_name": "algebra", "test_split": "test"},
    "geometry": {"dataset_path": "m", "dataset_name": "geometry", "test_split": "test"},
}


def test_names_resolve_to_scored_splits_and_groups_to_their_tasks():
    splits = resolve_benchmarks(
        ["gsm8k", "csqa", "math_group", BenchmarkSpec(name="private", dataset_path="me/set")],
        lookup=TASKS.get,
    )
    assert [(s.benchmark, s.task, s.dataset, s.split) for s in splits] == [
        ("gsm8k", "gsm8k", "openai/gsm8k/main", "test"),
        ("csqa", "csqa", "tau/commonsense_qa", "validation"),  # no test split: validation
        ("math_group", "algebra", "m/algebra", "test"),
        ("math_group", "geometry", "m/geometry", "test"),
        ("private", "private", "me/set", "test"),
    ]
    with pytest.raises(BenchmarkError, match="benchmark 'gsm8kk': lm-eval knows no task"):
        resolve_benchmarks(["gsm8kk"], lookup=TASKS.get)


def test_every_string_of_a_benchmark_row_is_a_text_of_its_item(tmp_path):
    folder = tmp_path / "mirror" / "me" / "set" / "default"
    folder.mkdir(parents=True)
    rows = [{"question": "Q one?", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "n": 3}]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = resolve_benchmarks([BenchmarkSpec(name="mine", dataset_path="me/set")])
    texts = read_benchmark_texts(splits, tmp_path / "mirror").to_pylist()
    assert [(t["item_id"], t["field"], t["text"]) for t in texts] == [
        ("mine:test:0", "question", "Q one?"),
        ("mine:test:0", "choices.text.0", "x"),
        ("mine:test:0", "choices.text.1", "y"),
        ("mine:test:0", "choices.label.0", "A"),
        ("mine:test:0", "choices.label.1", "B"),
    ]


def test_a_missing_split_fails_naming_the_benchmark(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    splits = resolve_benchmarks([BenchmarkSpec(name="mine", dataset_path="me/set")])
    with pytest.raises(BenchmarkError, match=r"benchmark 'mine' \(mine: me/set 'test'\)"):
        read_benchmark_texts(splits, tmp_path)


def test_a_corrupt_mirror_file_fails_naming_the_benchmark_and_the_file(tmp_path):
    folder = tmp_path / "me" / "set" / "default"
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_text('{"question": "fine"}\n{"question": broken\n')
    splits = resolve_benchmarks([BenchmarkSpec(name="mine", dataset_path="me/set")])
    with pytest.raises(BenchmarkError) as failure:
        read_benchmark_texts(splits, tmp_path)
    message = str(failure.value)
    assert "benchmark 'mine'" in message and str(folder / "test.jsonl") in message
    assert isinstance(failure.value.__cause__, DatasetSplitError)


def test_a_split_without_text_fails_naming_the_benchmark(tmp_path):
    folder = tmp_path / "me" / "set" / "default"
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_text('{"n": 1}\n')
    splits = resolve_benchmarks([BenchmarkSpec(name="mine", dataset_path="me/set")])
    with pytest.raises(BenchmarkError, match=r"benchmark 'mine'.*holds no rows with text"):
        read_benchmark_texts(splits, tmp_path)


# --- settings and the index a step reads ----------------------------------------------------
def test_settings_refuse_a_short_n_not_below_n_and_a_benchmark_named_twice():
    with pytest.raises(ValueError, match="SHORT_NGRAM"):
        DecontaminationSettings(ngram=8, short_ngram=8)
    with pytest.raises(ValueError, match="names \\['gsm8k'\\] twice"):
        DecontaminationSettings(benchmarks=["gsm8k", "gsm8k"])


def test_the_old_task_qa_decontamination_variables_name_their_replacement(monkeypatch):
    from mind_assets.settings import MindSettings

    monkeypatch.setenv("MIND_TASK_QA__DECONTAMINATION_EXTRA", "[]")
    with pytest.raises(ValueError, match="is now MIND_DECONTAMINATION__BENCHMARKS"):
        MindSettings()


def test_a_step_refuses_a_missing_index_and_one_built_for_other_benchmarks(settings, monkeypatch):
    assert current_index(settings).on is False  # the tests' default: an empty list, off
    monkeypatch.setenv("MIND_DECONTAMINATION__BENCHMARKS", '["gsm8k"]')
    from mind_assets.settings import get_settings

    with pytest.raises(BenchmarkIndexError, match=r"benchmark_index .* is not materialized"):
        current_index(get_settings())


def test_the_paraphrase_judge_asks_through_the_chat_path_resumably_and_counts_its_requests(
    tmp_path,
):
    from mind_assets.decontamination.judge import ParaphraseJudge
    from mind_assets.lib.prompts import load_prompt
    from mind_assets.llm.requests import ChatResult, EngineIdentity
    from mind_assets.settings import PROJECT_DIR

    asked = []

    def chat(batch, progress=None):
        asked.extend(batch)
        return [ChatResult("YES" if "15 pencils" in r.messages[-1][1] else "No.", 90, 2, "stop")
                for r in batch]  # fmt: skip

    prompt = load_prompt(PROJECT_DIR / "prompts" / "decontamination" / "paraphrase_judge.yaml")
    judge = ParaphraseJudge(
        prompt=prompt,
        chat=chat,
        identity=EngineIdentity(model="scripted", engine="test", engine_version="0"),
        requests_dir=tmp_path / "judge",
        batch_size=8,
        base_seed=0,
    )
    decontamination = decontamination_of({"gsm8k": [DENSE]}, near_misses=True)
    decontamination.judge = judge
    decontamination.item_texts = {("gsm8k", "gsm8k:test:0"): DENSE}
    near_but_clean = DENSE_RENUMBERED.replace("15 pencils", "16 pencils")
    found = decontamination.scan([DENSE_RENUMBERED, near_but_clean])
    assert [m.where for m in found[0]] == ["paraphrase, judged"] and found[1] == []
    assert len(asked) == 2 and DENSE in asked[0].messages[-1][1]
    assert judge.stats[0].generated == 2 and sum(s.output_tokens for s in judge.stats) == 4
    # Asked again (a retried step), the stored replies answer: nothing is generated twice.
    decontamination.scan([DENSE_RENUMBERED])
    assert len(asked) == 2 and judge.stats[-1].reused == 1
