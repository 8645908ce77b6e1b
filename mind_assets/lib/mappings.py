"""Text that must hold one JSON or YAML mapping (a prompt file, a sensor's cursor), parsed with
errors that say which of the two it got wrong."""

from __future__ import annotations

import json
from typing import Any, Literal

import yaml

_PARSERS = {"JSON": (json.loads, json.JSONDecodeError), "YAML": (yaml.safe_load, yaml.YAMLError)}


def parse_mapping(
    text: str | bytes,
    language: Literal["JSON", "YAML"],
    what: str,
    *,
    expected: str = "a mapping",
    error: type[ValueError] = ValueError,
) -> dict[str, Any]:
    """The mapping `text` holds; otherwise `error`, naming `what`, says whether the text is not
    valid `language` or holds something other than `expected`."""
    parse, syntax_error = _PARSERS[language]
    try:
        data = parse(text)
    except syntax_error as problem:
        raise error(f"{what} is not valid {language}: {problem}") from problem
    if not isinstance(data, dict):
        raise error(f"{what} must be {expected}")
    return data
