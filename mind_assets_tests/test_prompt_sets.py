"""MIND prompt sets as data: styles come from the files of the configured set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial

import pytest
import yaml
from dagster import MultiPartitionKey

from mind_assets.conversations.assets import conversations, mind_prompts
from mind_assets.conversations.styles import (
    KNOWLEDGE_GAP_STYLES,
    STYLE_KEYS,
    load_styles,
    style_prompt_path,
)
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.filtering.assets import filtered_conversations, longest_conversations
from mind_assets.filtering.outputs import FILTERED_CONVERSATIONS
from mind_assets.lib.prompts import PromptError, load_prompt
from mind_assets.lib.storage import asset_path, read_output
from mind_assets.settings import PROJECT_DIR
from mind_assets_tests.conftest import napkin_shard
from mind_assets_tests.merged_engine_calls import run_merged

PROMPTS = PROJECT_DIR / "prompts"
PAPER_GROUPS = {
    "explicit": {"teacher_student", "layman_knowall"},
    "implicit": {"problem_solving", "debate"},
    "none": {"two_students", "two_professors", "interview", "rephrase"},
}


@pytest.mark.parametrize("prompt_set", ["paper", "enhanced"])
def test_both_sets_hold_the_seven_styles_and_rephrase_in_the_papers_groups(prompt_set):
    styles = load_styles(PROMPTS, prompt_set)
    assert [s.key for s in styles] == [
        "two_students",
        "teacher_student",
        "two_professors",
        "debate",
        "problem_solving",
        "layman_knowall",
        "interview",
        "rephrase",  # the Rephrase baseline: a style-like source, not a conversation
    ]
    for group, keys in PAPER_GROUPS.items():
        assert {s.key for s in styles if s.knowledge_gap == group} == keys
    for style in styles:
        assert load_prompt(style.path).id == f"mind/{prompt_set}/{style.key}"


def test_paper_prompts_put_the_context_first_with_nothing_added_around_it():
    # The rephrase baseline keeps WRAP's layout (instruction first); see test_rephrase_style.py.
    for style in [s for s in load_styles(PROMPTS, "paper") if s.is_conversation]:
        prompt = load_prompt(style.path)
        messages = prompt.render(text="THE CONTEXT")
        # One user message that opens with the context; no system message, no reply prefix.
        assert [m["role"] for m in messages] == ["user"]
        assert messages[0]["content"].startswith("THE CONTEXT\n\n")
        assert "faithful" in messages[0]["content"]
        # Generation length follows the context left after the prompt, not a short fixed cap.
        assert prompt.sampling.max_tokens >= 4096


def test_default_set_is_enhanced_and_the_example_blend_takes_the_knowledge_gap_styles():
    assert style_prompt_path(PROMPTS, "debate") == PROMPTS / "mind" / "enhanced" / "debate.yaml"
    assert set(KNOWLEDGE_GAP_STYLES) == PAPER_GROUPS["explicit"] | PAPER_GROUPS["implicit"]
    example = yaml.safe_load((PROJECT_DIR / "blends" / "example.yaml").read_text())
    selected = [
        source["selection"]["styles"]
        for phase in example["phases"]
        for source in phase["sources"]
        if source["name"] == "mind_knowledge_gap"
    ]
    assert selected and set(selected[0]) == set(KNOWLEDGE_GAP_STYLES)


def test_an_unknown_set_or_a_file_without_a_style_header_is_refused(tmp_path):
    with pytest.raises(
        PromptError, match=r"prompt set 'nope': no directory .*sets: enhanced, paper"
    ):
        load_styles(PROMPTS, "nope")
    copy = tmp_path / "prompts"
    shutil.copytree(PROMPTS, copy)
    stray = copy / "mind" / "paper" / "stray.yaml"
    stray.write_text("id: mind/paper/stray\ndescription: no header\ntemplate: '{{ text }}'\n")
    with pytest.raises(
        PromptError, match=r"stray.yaml: a MIND prompt file needs a `style:` header"
    ):
        load_styles(copy, "paper")
    with pytest.raises(ValueError, match="unknown style 'socratic' in prompt set 'enhanced'"):
        style_prompt_path(PROMPTS, "socratic")


def test_a_prompt_file_dropped_into_the_set_is_a_new_style_partition(tmp_path):
    """No code change: a copy of the prompts with one more file, and the definitions Dagster
    loads have the new style in every conversation asset's partitions."""
    copy = tmp_path / "prompts"
    shutil.copytree(PROMPTS, copy)
    socratic = copy / "mind" / "paper" / "socratic.yaml"
    text = (copy / "mind" / "paper" / "two_professors.yaml").read_text()
    socratic.write_text(
        text.replace("id: mind/paper/two_professors", "id: mind/paper/socratic")
        .replace("title: Two Professors", "title: Socratic Dialogue")
        .replace("knowledge_gap: none", "knowledge_gap: explicit")
        .replace("order: 3", "order: 8")
        .replace("between two professors.", "in which a tutor only ever asks questions.")
    )
    script = (
        "import json\n"
        "from mind_assets.definitions import defs\n"
        "from mind_assets.conversations.styles import KNOWLEDGE_GAP_STYLES\n"
        "out = {}\n"
        "for name in ('conversations', 'filtered_conversations'):\n"
        "    partitions = defs.get_assets_def(name).partitions_def\n"
        "    style = partitions.get_partitions_def_for_dimension('style')\n"
        "    out[name] = style.get_partition_keys()\n"
        "out['gap'] = list(KNOWLEDGE_GAP_STYLES)\n"
        "print(json.dumps(out))\n"
    )
    env = {
        **os.environ,
        "MIND_PROMPTS_DIR": str(copy),
        "MIND_CONVERSATIONS__PROMPT_SET": "paper",
        "MIND_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("conversations", "filtered_conversations"):
        assert sorted(found[name]) == sorted([*STYLE_KEYS, "socratic"])
    assert "socratic" in found["gap"]


@pytest.mark.engine
def test_paper_set_and_paper_profile_end_to_end_keep_at_least_what_strict_keeps(
    settings, run, register, monkeypatch
):
    """The real engine on a real napkin section: conversations from the `paper` prompt set
    (a conversation style and the rephrase baseline), filtered with the `paper` profile and then
    with `strict` over the very same generations."""
    monkeypatch.setenv("MIND_CONVERSATIONS__PROMPT_SET", "paper")
    # 64 tokens: past `too_short`'s 48, and the comparison of the profiles needs no more.
    monkeypatch.setenv("MIND_MAX_TOKENS", "64")
    # 64 tokens cannot cover a quarter of a 500-token chunk; both profiles share the ratio.
    monkeypatch.setenv("MIND_FILTERS__MIN_SOURCE_LENGTH_RATIO", "0.1")
    shard, styles = "paperset", ("teacher_student", "rephrase")
    register(napkin_shard(shard, 1))
    run([mind_prompts])
    run([raw_documents, chunks], shard)
    # Both styles' requests in one engine call (each partition still materializes on its own).
    run_merged(
        [
            partial(run, [conversations], MultiPartitionKey({"shard": shard, "style": s}))
            for s in styles
        ]
    )
    for style in styles:
        rows = read_output(asset_path(settings.data_dir, "conversations", shard, style))
        version = load_prompt(PROMPTS / "mind" / "paper" / f"{style}.yaml").version
        assert rows.num_rows >= 1
        assert set(rows.column("prompt_id").to_pylist()) == {f"mind/paper/{style}"}
        assert set(rows.column("prompt_version").to_pylist()) == {version}
    rephrased = read_output(asset_path(settings.data_dir, "conversations", shard, "rephrase"))
    assert set(rephrased.column("n_turns").to_pylist()) == {0}

    kept: dict[str, dict[str, set[str]]] = {}
    for profile in ("paper", "strict"):
        monkeypatch.setenv("MIND_FILTERS__PROFILE", profile)
        kept[profile] = {}
        for style in styles:
            keys = {"shard": shard, "style": style}
            run([filtered_conversations], MultiPartitionKey(keys), raise_on_error=False)
            accepted = read_output(FILTERED_CONVERSATIONS.path(settings.data_dir, keys))
            quarantine = read_output(
                FILTERED_CONVERSATIONS.quarantine_path(settings.data_dir, keys)
            )
            for table in (accepted, quarantine):
                assert set(table.column("filter_profile").to_pylist()) <= {profile}
            assert accepted.num_rows + quarantine.num_rows >= 1
            kept[profile][style] = set(accepted.column("conversation_id").to_pylist())
            if style == "rephrase":  # the turn rule never rejects the rephrase
                rejected = {r for rs in quarantine.column("rejected_by").to_pylist() for r in rs}
                assert "not_a_conversation" not in rejected
        if profile == "paper":
            run([longest_conversations], shard)
            longest = read_output(asset_path(settings.data_dir, "longest_conversations", shard))
            assert "rephrase" not in set(longest.column("style").to_pylist())
    for style in styles:
        assert kept["strict"][style] <= kept["paper"][style], style
    assert sum(map(len, kept["paper"].values())) >= 1, "the paper profile kept something"
