"""The settings reference of docs/configuration.md, rendered from `MindSettings` itself.

`python -m mind_assets.settings_table --write` rewrites the table between the page's markers;
test_settings_docs.py fails when the page differs from what the model renders now.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from mind_assets.settings import PROJECT_DIR, MindSettings, StageSettings

DOCS_PAGE = PROJECT_DIR / "docs" / "configuration.md"
BEGIN = "<!-- settings-table:begin (generated: python -m mind_assets.settings_table --write) -->"
END = "<!-- settings-table:end -->"
# A path that falls back under the data root is shown under this name.
DATA_DIR_SHOWN = Path("$MIND_DATA_DIR")


@dataclass(frozen=True)
class Setting:
    """One row of the table: an environment variable, its default as shown, what it does."""

    variable: str
    default: str
    description: str


@dataclass(frozen=True)
class SettingsGroup:
    """The top-level settings, or one stage's sub-model, with the docstring that introduces it."""

    title: str
    about: str
    settings: list[Setting]


def settings_groups(model: type[BaseModel] = MindSettings) -> list[SettingsGroup]:
    """Every field of `model` as a table row: top-level fields first, then one group per stage
    sub-model (`MIND_<STAGE>__<FIELD>`), in declaration order."""
    prefix = model.model_config.get("env_prefix", "")
    delimiter = model.model_config.get("env_nested_delimiter") or "__"
    top: list[Setting] = []
    stages: list[SettingsGroup] = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, StageSettings):
            stage_prefix = f"{prefix}{name.upper()}{delimiter}"
            rows = [
                Setting(
                    f"{stage_prefix}{sub.upper()}",
                    shown_default(sub_field, sub_field.get_default(call_default_factory=True)),
                    sub_field.description or "",
                )
                for sub, sub_field in type(default).model_fields.items()
            ]
            stages.append(SettingsGroup(f"`{name}`", one_line(type(default).__doc__), rows))
        else:
            variable = field.alias or f"{prefix}{name.upper()}"
            shown = shown_default(field, default)
            if default is None:
                shown = data_root_fallback(model, name) or shown
            top.append(Setting(variable, shown, field.description or ""))
    about = f"Top-level fields, each set as `{prefix}<FIELD>`."
    return [SettingsGroup("Platform-wide", about, top), *stages]


def undocumented(model: type[BaseModel] = MindSettings) -> list[str]:
    """The variables whose field has no `Field(description=...)`."""
    return [s.variable for g in settings_groups(model) for s in g.settings if not s.description]


def shown_default(field: FieldInfo, default: Any) -> str:
    """A default as a reader would set it: strings as they are, paths in the repository as
    `<repo>/...`, anything else as JSON (a nested model without its unset fields)."""
    if default is None:
        return "unset"
    if isinstance(default, Path):
        if default.is_relative_to(PROJECT_DIR):
            return f"`<repo>/{default.relative_to(PROJECT_DIR).as_posix()}`"
        return f"`{default}`" if default.is_absolute() else f"`./{default.as_posix()}`"
    if isinstance(default, str):
        return f"`{default}`"
    value = TypeAdapter(field.annotation).dump_python(default, mode="json", exclude_none=True)
    return f"`{json.dumps(value)}`"


def data_root_fallback(model: type[BaseModel], name: str) -> str | None:
    """`$MIND_DATA_DIR/models` for a path field that, left unset, a property of the model
    replaces with a path under the data root; found by asking the properties themselves."""
    marker = Path("/settings-table-marker")
    unset = model.model_construct(data_dir=DATA_DIR_SHOWN)
    overridden = model.model_construct(data_dir=DATA_DIR_SHOWN, **{name: marker})
    for attribute, member in vars(model).items():
        if isinstance(member, property) and getattr(overridden, attribute) == marker:
            fallback = getattr(unset, attribute)
            if isinstance(fallback, Path) and fallback.is_relative_to(DATA_DIR_SHOWN):
                return f"`{fallback.as_posix()}`"
    return None


def one_line(docstring: str | None) -> str:
    return " ".join(inspect.cleandoc(docstring or "").split())


def cell(text: str) -> str:
    """`text` safe in a table cell: `<` and `*` outside code spans are escaped (GitHub would take
    `<data_dir>` for an HTML tag), and `|` everywhere."""
    parts = text.split("`")
    parts[::2] = [re.sub(r"([<*])", r"\\\1", part) for part in parts[::2]]
    return "`".join(parts).replace("|", "\\|")


def render(model: type[BaseModel] = MindSettings) -> str:
    """The markdown that goes between the page's markers: one table per group."""
    parts = []
    for group in settings_groups(model):
        rows = [
            f"| `{s.variable}` | {cell(s.default)} | {cell(s.description)} |"
            for s in group.settings
        ]
        parts.append(
            "\n".join(
                [
                    f"### {group.title}",
                    "",
                    cell(group.about),
                    "",
                    "| variable | default | description |",
                    "| --- | --- | --- |",
                    *rows,
                ]
            )
        )
    return "\n\n".join(parts)


def replace_generated(page: str, rendered: str) -> str:
    """`page` with the text between its markers replaced by `rendered`."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no {BEGIN} ... {END} region to write the table into")
    return f"{page[: start + len(BEGIN)]}\n\n{rendered}\n\n{page[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mind_assets.settings_table", description=__doc__
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"rewrite the table in {DOCS_PAGE}")
    action.add_argument(
        "--check", action="store_true", help="exit 1 when the page's table is out of date"
    )
    args = parser.parse_args(argv)
    missing = undocumented()
    if missing:
        print(f"settings without a description: {', '.join(missing)}", file=sys.stderr)
        return 1
    rendered = render()
    if not (args.write or args.check):
        print(rendered)
        return 0
    page = DOCS_PAGE.read_text()
    current = replace_generated(page, rendered)
    if args.check:
        if current != page:
            print(f"{DOCS_PAGE} is out of date: run {parser.prog} --write", file=sys.stderr)
            return 1
        return 0
    if current != page:
        DOCS_PAGE.write_text(current)
    return 0


if __name__ == "__main__":
    sys.exit(main())
