import shutil

import pytest

from mind_assets.conversations.styles import CONVERSATION_STYLE_KEYS, STYLE_KEYS, style_prompt_path
from mind_assets.lib.prompts import PromptError, load_prompt
from mind_assets.settings import PROJECT_DIR

PROMPTS = PROJECT_DIR / "prompts"


def test_every_style_has_a_prompt_with_instruction_first_and_document_last():
    # The rephrase source (not a conversation) is checked in test_rephrase_style.py.
    for style in CONVERSATION_STYLE_KEYS:
        prompt = load_prompt(style_prompt_path(PROMPTS, style))
        assert prompt.id == f"mind/enhanced/{style}"
        assert prompt.description and len(prompt.speakers) == 2
        messages = prompt.render(text="THE-DOCUMENT")
        user = [m for m in messages if m["role"] == "user"]
        assert len(user) == 1 and user[0]["content"].rstrip().endswith("THE-DOCUMENT")
        assert messages[0]["role"] == "system"  # the shared part comes first (prefix cache)
        assert messages[-1] == {"role": "assistant", "content": f"{prompt.speakers[0]}:"}
        assert "faithful" in prompt.template or "Use only what the text" in prompt.template
        assert "step by step" in prompt.template


def test_missing_variable_is_an_error_not_an_empty_string():
    prompt = load_prompt(style_prompt_path(PROMPTS, "debate"))
    with pytest.raises(PromptError, match="undefined"):
        prompt.render()


def test_sandbox_refuses_unsafe_attribute_access(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text('id: x\ndescription: x\ntemplate: "{{ text.__class__.__mro__ }}"\n')
    with pytest.raises(PromptError):
        load_prompt(path).render(text="a")


def test_editing_one_prompt_changes_only_that_styles_version(tmp_path):
    copy = tmp_path / "prompts"
    shutil.copytree(PROMPTS, copy)
    before = {s: load_prompt(style_prompt_path(copy, s)).version for s in STYLE_KEYS}
    path = style_prompt_path(copy, "debate")
    path.write_text(path.read_text().replace("Ground rules:", "Rules of the debate:"))
    after = {s: load_prompt(style_prompt_path(copy, s)).version for s in STYLE_KEYS}
    changed = {s for s in STYLE_KEYS if before[s] != after[s]}
    assert changed == {"debate"}


def test_invalid_prompt_file_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("id: x\ntemplate: hi\nsampling: {temperature: -1}\n")
    with pytest.raises(PromptError, match=r"(?s)bad\.yaml.*description.*sampling.temperature"):
        load_prompt(path)
