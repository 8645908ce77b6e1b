"""The settings reference in docs/configuration.md is what `mind_assets.settings_table` renders
from the settings model now, and every field it renders has a description."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mind_assets import settings_table
from mind_assets.settings import StageSettings
from mind_assets.settings_table import (
    BEGIN,
    DOCS_PAGE,
    END,
    render,
    replace_generated,
    undocumented,
)

REGENERATE = "python -m mind_assets.settings_table --write"


def test_the_configuration_page_holds_the_table_the_settings_model_renders():
    page = DOCS_PAGE.read_text()
    current = replace_generated(page, render())
    changes = difflib.unified_diff(page.splitlines(), current.splitlines(), lineterm="", n=0)
    assert current == page, f"run `{REGENERATE}`; it would change:\n" + "\n".join(changes)


def test_every_setting_has_a_description():
    assert undocumented() == [], "add Field(description=...) in mind_assets/settings.py"


class _Stage(StageSettings):
    documented: int = Field(default=1, description="Says what it does.")
    bare: int = 2


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="X_", env_nested_delimiter="__")

    data_dir: Path = Field(default=Path("data"), description="The root.")
    plain: str = "a"
    stage: _Stage = Field(default_factory=_Stage)


def test_a_field_without_a_description_is_named_top_level_and_in_a_stage():
    assert undocumented(_Settings) == ["X_PLAIN", "X_STAGE__BARE"]


def test_write_refuses_while_a_field_lacks_a_description(monkeypatch, tmp_path, capsys):
    page = tmp_path / "configuration.md"
    page.write_text(f"{BEGIN}\n{END}\n")
    monkeypatch.setattr(settings_table, "DOCS_PAGE", page)
    monkeypatch.setattr(settings_table, "undocumented", lambda: ["MIND_X"])
    assert settings_table.main(["--write"]) == 1
    assert "MIND_X" in capsys.readouterr().err
    assert page.read_text() == f"{BEGIN}\n{END}\n"


def test_write_replaces_a_stale_table_and_keeps_the_text_around_it(monkeypatch, tmp_path):
    page = tmp_path / "configuration.md"
    page.write_text(f"# Configuration\n\nprose\n\n{BEGIN}\n| stale |\n{END}\n\nafter\n")
    monkeypatch.setattr(settings_table, "DOCS_PAGE", page)
    assert settings_table.main(["--check"]) == 1
    assert settings_table.main(["--write"]) == 0
    written = page.read_text()
    assert written == f"# Configuration\n\nprose\n\n{BEGIN}\n\n{render()}\n\n{END}\n\nafter\n"
    assert "| stale |" not in written
    assert settings_table.main(["--check"]) == 0


def test_a_page_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="settings-table:begin"):
        replace_generated("# Configuration\n\nno markers here\n", render())


def test_stage_fields_are_nested_variables_and_paths_show_where_they_fall_back():
    table = render()
    assert "| `MIND_CORPUS__CHUNK_TOKENS` | `500` |" in table
    assert "| `MIND_MODELS_DIR` | `$MIND_DATA_DIR/models` |" in table
    assert "| `MIND_INBOX_DIR` | `$MIND_DATA_DIR/inbox` |" in table
    assert "| `MIND_TASK_MIRROR_DIR` | `$MIND_DATA_DIR/task_mirror` |" in table
    assert "| `MIND_PROMPTS_DIR` | `<repo>/prompts` |" in table
    assert "| `MIND_DATA_CACHE_DIR` | unset |" in table


def test_markup_in_a_description_cannot_break_the_table():
    class Marked(BaseModel):
        value: str = Field(default="a|b", description="one | two, <data_dir>/x, *.yaml, `a|<b>`")

    (row,) = [line for line in render(Marked).splitlines() if line.startswith("| `VALUE`")]
    assert row == r"| `VALUE` | `a\|b` | one \| two, \<data_dir>/x, \*.yaml, `a\|<b>` |"
